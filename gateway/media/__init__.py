"""Meter channels: the media that carry a relayed association to a meter (serial line, IPv6 mesh)."""
