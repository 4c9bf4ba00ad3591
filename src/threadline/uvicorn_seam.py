"""The one module that reaches into uvicorn's internals, and checks at import (``_REQUIRED``)
that they are there: a uvicorn that drops one fails start-up in one line, not a request.

- ``protocol_class``: uvicorn's httptools protocol, which holds a slow request head for
  ever and keeps a head of any size, with a deadline and a size limit (408 or 431), and
  a lingering close: an immediate close while a body is still coming resets the
  connection, and clients that send before they read (httpx, requests) lose the answer.
  Its WebSocket upgrades get a close that aborts and a shutdown that spares closing ones.
- ``RawSocketMiddleware``/``RawSocket``: live frames written straight to the transport
  of uvicorn's sans-I/O WebSocket protocol, skipping the ASGI send chain per subscriber
  (Phoenix's "fastlane"); ``FAST_PATHS=off`` leaves the middleware out.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from threadline.metrics import HTTP_REQUESTS_CUT_OFF

# The uvicorn these were written against and checked with.
WRITTEN_FOR = "0.54"

# nginx allows 4 x 8 KiB of headers, Node 16 KiB; a Clerk JWT and cookies fit well.
MAX_HEAD_BYTES = 64 * 1024
# Apache lingers 2 s; on a LAN that drains hundreds of megabytes.
LINGER_SECONDS = 2.0

# Class -> the names this module uses of it (asyncio.Protocol's need no check: always there).
_REQUIRED: dict[type, tuple[str, ...]] = {
    HttpToolsProtocol: (
        "on_headers_complete",
        "on_message_begin",
        "handle_websocket_upgrade",
        "ws_protocol_class",
        "parser",
        "cycle",
        "transport",
        "flow",
        "loop",
    ),
    RequestResponseCycle: ("transport", "more_body", "response_complete", "keep_alive"),
    FlowControl: ("resume_reading",),
    WebSocketsSansIOProtocol: (
        "shutdown",
        # ``send.__self__``: the ASGI send is this bound method of the protocol.
        "send",
        "close_sent",
        "disconnected",
        "writable",
        "conn",
        "transport",
        "handshake_complete",
        "request",
        "response",
    ),
}


def _has(cls: type, name: str) -> bool:
    """A class attribute, or an instance attribute that one of its methods assigns."""
    codes = (getattr(member, "__code__", None) for k in cls.__mro__ for member in vars(k).values())
    return hasattr(cls, name) or any(code and name in code.co_names for code in codes)


def check(required: dict[type, tuple[str, ...]] = _REQUIRED) -> None:
    """Raise ImportError, in one line, for the first private name uvicorn no longer has."""
    for cls, names in required.items():
        for name in names:
            if not _has(cls, name):
                raise ImportError(
                    f"uvicorn {uvicorn.__version__} broke threadline.uvicorn_seam: "
                    f"{cls.__name__}.{name} is gone (written for uvicorn {WRITTEN_FOR}.x)"
                )


check()


def _answer(status: int, phrase: str, message: str) -> bytes:
    body = message.encode()
    return (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


_TIMED_OUT = _answer(408, "Request Timeout", "The request head arrived too slowly")
_TOO_LARGE = _answer(431, "Request Header Fields Too Large", "The request head is too large")


def protocol_class(header_timeout_seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a deadline and a size limit on request heads."""

    class HeadLimitedProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True  # a head is expected (a new connection) or under way
            self._head_begun = False  # a byte of it has arrived
            self._head_bytes = 0
            self._head_timer: asyncio.TimerHandle | None = None
            self._lingering = False
            if self.ws_protocol_class is WebSocketsSansIOProtocol:  # else --ws is another one
                self.ws_protocol_class = _WebSocketProtocol

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._lingering:  # the rest of a body nobody reads
                return
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if not self._in_head or self.transport.is_closing():
                return
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(_TOO_LARGE, "431")
            elif self._head_timer is None:
                # A head that arrives in one read costs no timer; one left unfinished gets one.
                self._arm()

        def handle_websocket_upgrade(self) -> None:
            super().handle_websocket_upgrade()
            # The parser calls back into this object: let it go, or both wait for the GC.
            self.parser = None  # type: ignore[assignment]

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_head:
                # A keep-alive request: the read its head began in is not counted.
                self._head_bytes = 0
            self._in_head = self._head_begun = True

        def on_headers_complete(self) -> None:
            self._in_head = self._head_begun = False
            if self._head_timer is not None:  # most heads arrive in one read: no timer
                self._disarm()
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and cycle.transport is self.transport:
                # The cycle closes the connection after an answer with "connection: close".
                cycle.transport = _CycleTransport(self, cycle)  # type: ignore[assignment]

        def eof_received(self) -> None:
            if self._lingering:  # the client has sent all it meant to: close now
                self.transport.close()
            super().eof_received()

        def close_after_answer(self, cycle: Any) -> None:
            """Close once the answer is out; linger first if a request body is still coming."""
            if self.transport.is_closing() or self._lingering or not cycle.more_body:
                self.transport.close()
            else:
                self._linger()

        def _linger(self) -> None:
            if not self.transport.can_write_eof():
                self.transport.close()
                return
            self._lingering = True
            self.transport.write_eof()
            self.flow.resume_reading()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

        def _arm(self) -> None:
            self._head_timer = self.loop.call_later(header_timeout_seconds, self._timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or not self._in_head:
                return
            if not self._head_begun:  # opened and never used (a browser's preconnect)
                self.transport.close()
                return
            self._refuse(_TIMED_OUT, "408")

        def _refuse(self, answer: bytes, status: str) -> None:
            HTTP_REQUESTS_CUT_OFF.labels(status).inc()
            self._disarm()
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # A pipelined head during a response: read no more, close after that one.
                cycle.keep_alive = False
                self._lingering = True
                return
            self.transport.write(answer)
            self._linger()

    return HeadLimitedProtocol


class _CycleTransport:
    """What uvicorn's request cycle uses of the transport, with a lingering close."""

    __slots__ = ("_cycle", "_protocol", "write")

    def __init__(self, protocol: Any, cycle: Any) -> None:
        self._protocol = protocol
        # Weak: the cycle holds this, and a reference cycle would wait for the GC.
        self._cycle = weakref.ref(cycle)
        # The transport's own method: no frame of ours per write.
        self.write: Callable[[bytes], None] = protocol.transport.write

    def is_closing(self) -> bool:
        return self._protocol.transport.is_closing()  # type: ignore[no-any-return]

    def close(self) -> None:
        cycle = self._cycle()
        if cycle is not None:  # it is: the cycle is the one closing
            self._protocol.close_after_answer(cycle)


class _AbortingTransport:
    """What uvicorn's sans-I/O WebSocket protocol uses of its transport, with a close that
    ends in an abort: asyncio's close waits until the write buffer drains, which a peer
    that stopped reading (its kernel still answering) never lets happen, and uvicorn only
    closes (after a close frame, a keep-alive timeout, at shutdown). The connection was
    then never lost: its context, streams and buffers stayed, and shutdown waited."""

    __slots__ = ("_transport", "pause_reading", "resume_reading", "write")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        # The transport's own methods: no frame of ours per write or message.
        self.write, self.pause_reading = transport.write, transport.pause_reading
        self.resume_reading = transport.resume_reading

    def close(self) -> None:
        transport = self._transport
        if not transport.is_closing():
            transport.close()
            # A reading peer takes the rest well within it; after connection_lost, a no-op.
            asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abort)

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info
        return getattr(self._transport, name)


class _WebSocketProtocol(WebSocketsSansIOProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_AbortingTransport(transport))  # type: ignore[arg-type]

    def eof_received(self) -> None:
        # asyncio closes the transport after a FIN, and not through ours: abort it too.
        self.transport.close()

    def shutdown(self) -> None:
        # An answered client close is on its way out: a close frame on top raises InvalidState.
        if not self.transport.is_closing():
            super().shutdown()


# -- live frames straight to the WebSocket transport

SCOPE_KEY = "threadline.raw_socket"


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
        """Let go of the upgrade request and response (about 4 KB), which uvicorn keeps
        for the connection's life but reads only until the handshake is complete."""
        protocol = self._protocol
        if protocol.handshake_complete and hasattr(protocol, "response"):
            protocol.request = None
            protocol.response = None


def raw_socket(scope: Scope) -> RawSocket | None:
    """The connection's ``RawSocket``, if the middleware gave it one."""
    return scope.get(SCOPE_KEY)


class RawSocketMiddleware:
    """Puts a ``RawSocket`` in the scope of WebSocket connections that can have one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            protocol = getattr(send, "__self__", None)
            if isinstance(protocol, WebSocketsSansIOProtocol):
                # In place: a copy of the scope would live as long as the connection.
                scope[SCOPE_KEY] = RawSocket(protocol)
        try:
            await self.app(scope, receive, send)
        finally:
            # Else protocol -> scope -> RawSocket -> protocol is a cycle that waits for the GC.
            scope.pop(SCOPE_KEY, None)
