"""A small graphql-transport-ws client over the `websockets` package, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


class GraphQLWS:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self._ids = itertools.count(1)
        # Answers read while waiting in `until`, handed out first by `next`.
        self._held: deque[dict[str, Any]] = deque()

    @classmethod
    async def connect(cls, url: str, token: str | None) -> GraphQLWS:
        conn = await websockets.connect(url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        client = cls(conn)
        payload = {"authorization": f"Bearer {token}"} if token else {}
        await conn.send(json.dumps({"type": "connection_init", "payload": payload}))
        raw = await asyncio.wait_for(conn.recv(), 10)
        assert isinstance(raw, str), f"a binary frame: {raw!r}"
        message = json.loads(raw)
        assert message["type"] == "connection_ack", message
        return client

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        op_id = str(next(self._ids))
        await self.conn.send(
            json.dumps(
                {
                    "id": op_id,
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables or {}},
                }
            )
        )
        return op_id

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        """The next `next`/`error` message, answering pings on the way."""
        if self._held:
            return self._held.popleft()
        while True:
            message = await self._answer(timeout)
            if message is not None:
                return message

    async def until(self, ready: Callable[[], bool], timeout: float = 10) -> None:
        """Wait until `ready()` holds (the server has registered a subscription) or
        the server refuses or ends an operation (it never will be), polling instead
        of sleeping a guessed time. Messages read meanwhile are kept for `next`.
        Fails after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            assert loop.time() < deadline, f"not ready within {timeout}s"
            try:
                # Cancelling recv() loses nothing (websockets' asyncio client).
                message = await self._answer(0.01)
            except TimeoutError:
                continue
            if message is not None:
                self._held.append(message)
                if _ends_an_operation(message):
                    return

    async def _answer(self, timeout: float) -> dict[str, Any] | None:
        """One message off the socket: an answer, or None for a ping (answered)."""
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        assert isinstance(raw, str), f"a binary frame: {raw!r}"  # graphql-ws reads text
        message: dict[str, Any] = json.loads(raw)
        if message["type"] == "ping":
            await self.conn.send(json.dumps({"type": "pong"}))
            return None
        return message if message["type"] in {"next", "error", "complete"} else None

    async def close(self) -> None:
        await close_draining(self.conn)


async def close_draining(conn: ClientConnection) -> None:
    """Close as a browser does: frames still arriving are read and dropped. Without
    that, a full receive queue stops the client reading, so it never sees the
    server's close frame and waits out its close timeout (10 s)."""

    async def discard() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await conn.recv()

    draining = asyncio.create_task(discard())
    try:
        await conn.close()
    finally:
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await draining


def _ends_an_operation(message: dict[str, Any]) -> bool:
    """`error`, `complete`, or a `next` that carries errors and no data (a refusal)."""
    if message["type"] != "next":
        return True
    payload = message.get("payload") or {}
    return bool(payload.get("errors")) and payload.get("data") is None
