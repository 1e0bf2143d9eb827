"""CRC-16/X-25, the HCS and FCS of IEC 62056-46 frames (ISO/IEC 13239, frame checking sequence)."""

_POLYNOMIAL_REFLECTED = 0x8408  # x^16 + x^12 + x^5 + 1 (0x1021), bit-reversed for LSB-first lines
_INITIAL = 0xFFFF  # ISO/IEC 13239, 16-bit FCS: register preset to all ones
_FINAL_XOR = 0xFFFF  # ISO/IEC 13239, 16-bit FCS: ones' complement of the remainder is sent


def _table_entry(byte: int) -> int:
    crc = byte
    for _ in range(8):
        crc = (crc >> 1) ^ _POLYNOMIAL_REFLECTED if crc & 1 else crc >> 1
    return crc


_TABLE = tuple(_table_entry(byte) for byte in range(256))


def crc16_x25(data: bytes) -> int:
    """Return the CRC-16/X-25 of `data`; send it LSB first."""
    crc = _INITIAL
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc ^ _FINAL_XOR
