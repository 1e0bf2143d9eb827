-- Schema version 4: meters on an IPv6 mesh. Their place is (link = the mesh's name, IPv6 address,
-- logical device = the wrapper wPort); physical_address is 0 and unused on a mesh. The EUI-64
-- (Wi-SUN, G3-PLC) is part of the identity: a meter keeps its SAP when its address changes.
ALTER TABLE meters ADD COLUMN ip_address TEXT;  -- canonical IPv6 text; NULL on a serial line
ALTER TABLE meters ADD COLUMN eui64 BLOB;       -- 8 bytes, when the mesh tells it
ALTER TABLE meters ADD COLUMN ip_transport TEXT NOT NULL DEFAULT 'udp'
    CHECK (ip_transport IN ('udp', 'tcp'));      -- IEC 62056-4-7: datagrams, or a connection per association
DROP INDEX meters_place;
CREATE UNIQUE INDEX meters_place ON meters (link, physical_address, logical_device)
    WHERE state != 'removed' AND ip_address IS NULL;
CREATE UNIQUE INDEX meters_ip_place ON meters (link, ip_address, logical_device)
    WHERE state != 'removed' AND ip_address IS NOT NULL;
CREATE UNIQUE INDEX meters_eui64 ON meters (eui64, logical_device)
    WHERE eui64 IS NOT NULL AND state != 'removed';
