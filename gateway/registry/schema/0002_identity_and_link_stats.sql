-- Schema version 2: the system title as part of a meter's identity, and link statistics.
ALTER TABLE meters ADD COLUMN system_title BLOB;
ALTER TABLE meters ADD COLUMN registered_by TEXT NOT NULL DEFAULT 'provisioning'
    CHECK (registered_by IN ('provisioning', 'config', 'discovery', 'push'));
CREATE TABLE link_stats (
    meter_id     INTEGER PRIMARY KEY REFERENCES meters (id) ON DELETE CASCADE,
    frames       INTEGER NOT NULL DEFAULT 0,
    retries      INTEGER NOT NULL DEFAULT 0,
    crc_errors   INTEGER NOT NULL DEFAULT 0,
    last_rtt_ms  REAL
);
