"""Broadcast frames framed once and written straight to uvicorn's WebSocket transport.

Every subscriber of a broadcast operation with the same operation id gets the
same bytes for an event. Framing them once and handing them to each socket's
transport skips, per subscriber, the ASGI send chain (Starlette's WebSocket,
uvicorn's send, the websockets library's framing), which is most of the CPU a
delivery costs after the system call itself. Phoenix's "fastlane" broadcasts
are the precedent.

Only for uvicorn's sans-I/O protocol, recognised when the socket connects; a
socket that is not open or is pushing back is written through ASGI as usual, so
back-pressure and the close handshake stay uvicorn's.
"""

from __future__ import annotations

import struct
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.protocol import State

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # another server, or a uvicorn without it: ASGI sends only
    WebSocketsSansIOProtocol = None  # type: ignore[assignment]

SCOPE_KEY = "threadline.raw_socket"
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


class RawSocket:
    """The transport under one uvicorn sans-I/O WebSocket connection."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def try_write(self, frame: bytes) -> bool:
        """Write a whole frame now if the socket is open and taking data; else False."""
        protocol = self._protocol
        if (
            protocol.close_sent
            or protocol.disconnected
            or not protocol.writable.is_set()
            or protocol.conn.state is not State.OPEN
        ):
            return False
        protocol.transport.write(frame)
        return True

    def forget_handshake(self) -> None:
        """Let go of the upgrade request and response (headers and all, about 4 KB).

        uvicorn keeps both for the connection's life, but reads them only until the
        handshake is complete; an idle subscribed socket is mostly such leftovers.
        """
        protocol = self._protocol
        if protocol.handshake_complete and hasattr(protocol, "response"):
            protocol.request = None
            protocol.response = None


class RawSocketMiddleware:
    """Puts a ``RawSocket`` in the scope of WebSocket connections that can have one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and WebSocketsSansIOProtocol is not None:
            protocol = getattr(send, "__self__", None)
            if isinstance(protocol, WebSocketsSansIOProtocol):
                # Set in place, as Starlette sets its own keys: a copy of the scope
                # would live as long as the connection beside the original.
                scope[SCOPE_KEY] = RawSocket(protocol)
        await self.app(scope, receive, send)
