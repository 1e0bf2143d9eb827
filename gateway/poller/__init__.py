"""Legacy autonomous polling: the concentrator reads meters itself, on a schedule (off by default)."""
