"""A WebSocket text frame built once, for the bytes every caught-up subscriber gets.

The fan-out frames an event once per operation id and hands the bytes to each
socket that can take them directly (``uvicorn_seam.RawSocket``).
"""

from __future__ import annotations

import struct

_TEXT_FINAL = 0x81  # FIN, text opcode; server frames are not masked (RFC 6455 5.1)


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (UTF-8)."""
    size = len(payload)
    if size < 126:
        header = bytes((_TEXT_FINAL, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", _TEXT_FINAL, 126, size)
    else:
        header = struct.pack("!BBQ", _TEXT_FINAL, 127, size)
    return header + payload
