-- Schema version 5: the HDLC parameters each meter accepted in its last UA (issue 13), seen from the gateway
-- (tx = what the gateway sends), and the meter's limits learned so far (the IEC maximum where none is known):
-- the next SNRM proposes them within the link's cap, so a meter is not asked for more at every association.
CREATE TABLE link_parameters (
    meter_id          INTEGER PRIMARY KEY REFERENCES meters (id) ON DELETE CASCADE,
    max_info_tx       INTEGER NOT NULL,
    max_info_rx       INTEGER NOT NULL,
    window_tx         INTEGER NOT NULL,
    window_rx         INTEGER NOT NULL,
    limit_max_info_tx INTEGER NOT NULL,
    limit_max_info_rx INTEGER NOT NULL,
    limit_window_tx   INTEGER NOT NULL,
    limit_window_rx   INTEGER NOT NULL,
    learned_at        REAL
);
