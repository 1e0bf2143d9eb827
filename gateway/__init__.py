"""DLMS Direct Connect data concentrator."""

__version__ = "0.1.0"
