"""Pure protocol codecs: bytes in, objects/bytes out. No asyncio, no clock, no I/O."""
