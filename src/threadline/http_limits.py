"""Request bodies bounded (413) and timed (408) as they stream in, on every route, before
anything buffers them; only time spent waiting for the client counts. After a cut-off the
app reads a disconnect, and what it sends or raises is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadline.errors import ErrorCode
from threadline.metrics import HTTP_REQUESTS_CUT_OFF

log = logging.getLogger(__name__)

# Room for a multipart form's boundaries, part headers and JSON parts beside the file.
MULTIPART_ALLOWANCE_BYTES = 64 * 1024
_DISCONNECT: Message = {"type": "http.disconnect"}
_MULTIPART = b"multipart/form-data"
_TOO_SLOW = "The request body arrived too slowly"


class BodyLimits:
    """ASGI middleware: the size and pace of every HTTP request body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_request_bytes: int,
        max_upload_bytes: int,
        body_timeout_seconds: float,
        body_min_bytes_per_second: int,
    ) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_multipart_bytes = max_upload_bytes + MULTIPART_ALLOWANCE_BYTES
        self.body_timeout = body_timeout_seconds
        self.min_rate = body_min_bytes_per_second
        # Bodies whose app is waiting for the client's next bytes -> deadline (time.monotonic).
        self._waiting: dict[_Body, float] = {}
        self._sweep: asyncio.TimerHandle | None = None
        # Cut-offs are this late at most; a timer per receive cost more than JSON decoding.
        self._sweep_every = min(1.0, body_timeout_seconds / 4)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = multipart = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"content-type":
                multipart = value[: len(_MULTIPART)].lower() == _MULTIPART
        declared: int | None = None
        if not chunked:
            try:
                declared = None if length is None else int(length)
            except ValueError:  # the server's parser lets such a header through: count instead
                declared = None
            # HTTP/1: no length and no chunking means no body (HTTP/2 may stream one).
            http1 = scope.get("http_version", "1.1") in ("1.1", "1.0")
            if declared == 0 or (length is None and http1):
                await self.app(scope, receive, send)
                return
        body = _Body(self, scope, receive, send, multipart)
        if declared is not None and declared > body.limit:
            await body.refuse_too_large()
            return
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.cut_off:
                raise
            # The app read a disconnect where its body was cut off; it has been answered.
            log.debug("after a cut-off body the app raised", exc_info=True)

    def _sweep_overdue(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        if not self._waiting:
            return
        now = time.monotonic()
        for body, deadline in self._waiting.items():
            if deadline <= now and not body.timed_out and body.task is not None:
                body.timed_out = True
                body.task.cancel()  # the body's receive turns this into a 408
        self._sweep = loop.call_later(self._sweep_every, self._sweep_overdue, loop)


class _Body:
    """One request's body as the app reads it: counted, timed, cut off when it must be."""

    __slots__ = (
        "_receive",
        "_send",
        "cut_off",
        "done",
        "guard",
        "limit",
        "multipart",
        "received",
        "responded",
        "scope",
        "task",
        "timed_out",
        "waited",
    )

    def __init__(
        self, guard: BodyLimits, scope: Scope, receive: Receive, send: Send, multipart: bool
    ) -> None:
        self.guard = guard
        self.scope = scope
        self._receive = receive
        self._send = send
        self.limit = guard.max_multipart_bytes if multipart else guard.max_request_bytes
        self.multipart = multipart
        self.received = 0
        self.waited = 0.0  # seconds spent waiting for the client's bytes
        self.done = False  # the whole body has been read
        self.cut_off = False
        self.responded = False  # the app has started its answer
        self.task: asyncio.Task[Any] | None = None  # the one waiting in receive
        self.timed_out = False

    async def receive(self) -> Message:
        if self.done:
            # Past the body, the app waits for a disconnect: no clock on that.
            return _DISCONNECT if self.cut_off else await self._receive()
        guard = self.guard
        allowed = guard.body_timeout
        if guard.min_rate:
            allowed += self.received / guard.min_rate
        delay = min(guard.body_timeout, allowed - self.waited)
        if delay <= 0:
            await self._cut_off(408, _TOO_SLOW, {})
            return _DISCONNECT
        loop = asyncio.get_running_loop()
        # The monotonic clock itself (the loop's time() is a Python call around it).
        started = time.monotonic()
        self.task = asyncio.current_task(loop)
        # Watched while the app waits (inline: this runs for every request).
        waiting = guard._waiting
        waiting[self] = started + delay
        if guard._sweep is None:
            guard._sweep = loop.call_later(guard._sweep_every, guard._sweep_overdue, loop)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            # Ours (the sweep's), unless someone else cancelled the task too.
            if not self.timed_out or self.task.uncancel() > 0:  # type: ignore[union-attr]
                raise
            await self._cut_off(408, _TOO_SLOW, {})
            return _DISCONNECT
        finally:
            del waiting[self]
            # The task holds this body (through the app's frames): no cycle left behind.
            self.task = None
        self.waited += time.monotonic() - started
        if message["type"] != "http.request":
            self.done = True
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.limit:
            await self.refuse_too_large()
            return _DISCONNECT
        if not message.get("more_body", False):
            self.done = True
        return message

    async def send(self, message: Message) -> None:
        if self.cut_off:
            return
        if message["type"] == "http.response.start":
            self.responded = True
        await self._send(message)

    async def refuse_too_large(self) -> None:
        what = "an upload request" if self.multipart else "a request body"
        message = f"The request is too large: {what} may have at most {self.limit} bytes"
        await self._cut_off(413, message, {"maxBytes": self.limit})

    async def _cut_off(self, status: int, message: str, extensions: dict[str, object]) -> None:
        self.cut_off = self.done = True
        HTTP_REQUESTS_CUT_OFF.labels(str(status)).inc()
        if self.responded:  # too late to answer: the app finishes on a disconnect
            return
        scope = self.scope
        if self.multipart or scope["path"] == scope.get("root_path", "") + "/graphql":
            code = ErrorCode.PAYLOAD_TOO_LARGE if status == 413 else ErrorCode.BAD_USER_INPUT
            error = {"message": message, "extensions": {"code": code.value, **extensions}}
            body = orjson.dumps({"errors": [error]})
            content_type = b"application/json"
        else:
            body = message.encode()
            content_type = b"text/plain; charset=utf-8"
        # What the client still sends is not read: close the connection.
        headers = [(b"content-type", content_type), (b"connection", b"close")]
        await respond(self._send, status, body, headers)


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """A whole answer: ``headers`` and the body's length, then the body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
