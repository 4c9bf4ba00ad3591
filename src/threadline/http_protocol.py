"""uvicorn's HTTP protocol (httptools) with what it lacks against slow and large requests.

uvicorn arms its only timer, ``timeout_keep_alive``, after a response; a connection
that sends nothing, or its request line and headers a few bytes at a time, is held
for ever, and httptools keeps a head of any size in memory. Here a head must be
complete within ``HTTP_HEADER_TIMEOUT_SECONDS`` of the connection opening (or of
a read that left it unfinished) and within ``MAX_HEAD_BYTES``; otherwise the
connection gets 408 or 431 and is closed. Bodies are the ASGI app's business
(``http_limits``): only the app knows when it is waiting for one.

And a lingering close: when an answer closes the connection while the client is
still sending a body (a 413 or 408 from ``http_limits``), closing at once makes
the kernel reset the connection, and a client that sends its whole body before
it reads (httpx, requests) loses the answer. Instead the write side is shut and
what still arrives is read and dropped, unparsed, for up to ``LINGER_SECONDS``.

The server is told to use it by name (``threadline.asgi:http_protocol``, so that
each worker builds it from its own settings) or, in process, by the class
``protocol_class`` returns. The uvicorn internals it relies on are checked at import.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from threadline.metrics import HTTP_REQUESTS_CUT_OFF

# nginx allows 4 x 8 KiB of headers, Node 16 KiB; a Clerk JWT and cookies fit well.
MAX_HEAD_BYTES = 64 * 1024
# Apache lingers 2 s; on a LAN that drains hundreds of megabytes.
LINGER_SECONDS = 2.0

_USED = (
    "connection_made",
    "connection_lost",
    "data_received",
    "eof_received",
    "on_headers_complete",
    "on_message_begin",
)
_missing = [name for name in _USED if not hasattr(HttpToolsProtocol, name)]
if _missing:  # pragma: no cover - a uvicorn release that changed the protocol
    raise ImportError(f"uvicorn's HttpToolsProtocol lacks {_missing}; see threadline.http_protocol")


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

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_head:
                # A keep-alive request: the read its head began in is not counted.
                self._head_bytes = 0
            self._in_head = self._head_begun = True

        def on_headers_complete(self) -> None:
            self._in_head = self._head_begun = False
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
            transport = self.transport
            if (
                transport.is_closing()
                or self._lingering
                or not cycle.more_body
                or not transport.can_write_eof()
            ):
                transport.close()
                return
            self._linger()

        def _linger(self) -> None:
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
                # A pipelined head, while a response is under way: no answer of ours in
                # the middle of that one; read no more, and close after it.
                cycle.keep_alive = False
                self._lingering = True
                return
            self.transport.write(answer)
            if self.transport.can_write_eof():
                self._linger()
            else:
                self.transport.close()

    return HeadLimitedProtocol


class _CycleTransport:
    """What uvicorn's request cycle uses of the transport, with a lingering close."""

    __slots__ = ("_cycle", "_protocol")

    def __init__(self, protocol: Any, cycle: Any) -> None:
        self._protocol = protocol
        self._cycle = cycle

    def write(self, data: bytes) -> None:
        self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        closing: bool = self._protocol.transport.is_closing()
        return closing

    def close(self) -> None:
        self._protocol.close_after_answer(self._cycle)
