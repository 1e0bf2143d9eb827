-- Schema version 3: invocation counters the gateway has reserved for its own keys.
-- A counter is reserved (ceiling written durably) before it is spent, so a power cut can never
-- make the gateway send the same counter twice under one key (AES-GCM nonce reuse).
CREATE TABLE invocation_counters (
    key_name TEXT PRIMARY KEY,
    ceiling  INTEGER NOT NULL CHECK (ceiling >= 0)
);
