"""A standby pair of gateways (issue 15): roles, the authenticated replication channel, the registry copy."""
