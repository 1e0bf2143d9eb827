"""Frame capture for Wireshark: both legs of the relay, as the gateway saw them."""
