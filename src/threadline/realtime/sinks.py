"""Where a live operation's frames go: the operation's socket, as text or as ready bytes.

The fan-out frames an event once per operation id and hands the bytes to each
socket that can take them at once (``FrameWriter``: uvicorn's transport, see
``uvicorn_seam.RawSocket``); any other write goes through the ASGI send.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import orjson

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


class FrameWriter(Protocol):
    def try_write(self, frame: bytes) -> bool:
        """Write a whole frame now if the socket takes it without waiting; else False."""
        ...


class Operation(Protocol):
    """The protocol handler's record of one operation (strawberry's ``Operation``)."""

    @property
    def id(self) -> str: ...
    @property
    def completed(self) -> bool: ...


class DirectSink:
    """Where a graphql-transport-ws operation's frames go when written directly:
    ``send_text`` through ASGI (it may wait; the caller bounds that), or ``raw``
    ready-made bytes without waiting, when the server allows it.

    A resolver that writes its frames itself can set ``detached``: its GraphQL stream
    then ends and the transport runs that in the operation's task instead, so that
    strawberry's and graphql-core's per-operation state is freed while the
    subscription lives on. ``on_end`` callbacks run when it finally ends.
    """

    __slots__ = ("_operation", "detached", "on_end", "prefix", "raw", "send_text")

    def __init__(
        self,
        operation: Operation,
        send_text: Callable[[str], Coroutine[Any, Any, None]],
        raw: FrameWriter | None = None,
    ) -> None:
        self._operation = operation
        self.send_text = send_text
        self.raw = raw
        self.prefix = '{"id":' + orjson.dumps(operation.id).decode() + ',"type":"next","payload":'
        self.detached: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.on_end: list[Callable[[], None]] = []

    @property
    def closed(self) -> bool:
        return bool(self._operation.completed)

    def frame(self, payload: str) -> str:
        return self.prefix + payload + "}"
