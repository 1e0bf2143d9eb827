-- Schema version 1: registered meters and their SAPs.
CREATE TABLE meters (
    id                  INTEGER PRIMARY KEY,
    sap                 INTEGER NOT NULL,
    logical_device_name BLOB,                 -- 0.0.42.0.0.255, read through the public client
    link                TEXT    NOT NULL,
    physical_address    INTEGER NOT NULL,
    logical_device      INTEGER NOT NULL DEFAULT 1,
    state               TEXT    NOT NULL DEFAULT 'registered'
                        CHECK (state IN ('registered', 'online', 'offline', 'removed')),
    first_seen          REAL,
    last_seen           REAL,
    removed_at          REAL
);
-- A SAP, a place on the meter network and an identity each belong to one live meter.
CREATE UNIQUE INDEX meters_sap ON meters (sap) WHERE state != 'removed';
CREATE UNIQUE INDEX meters_place ON meters (link, physical_address, logical_device) WHERE state != 'removed';
CREATE UNIQUE INDEX meters_name ON meters (logical_device_name)
    WHERE logical_device_name IS NOT NULL AND state != 'removed';
