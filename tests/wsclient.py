"""A small graphql-transport-ws client over the `websockets` package, for tests."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


class GraphQLWS:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self._ids = itertools.count(1)

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
        while True:
            raw = await asyncio.wait_for(self.conn.recv(), timeout)
            assert isinstance(raw, str), f"a binary frame: {raw!r}"  # graphql-ws reads text
            message = json.loads(raw)
            if message["type"] == "ping":
                await self.conn.send(json.dumps({"type": "pong"}))
                continue
            if message["type"] in {"next", "error", "complete"}:
                return message  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.conn.close()
