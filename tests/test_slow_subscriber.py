"""A subscriber that stops reading is ended, told to resume, and costs bounded memory."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests import factories
from tests.conftest import Clients, Server
from tests.live import fanout_members, until
from threadline.realtime import fanout

# Twelve copies of the body per event: ~48 KB frames, so that a few hundred events
# exceed what the kernel buffers for a socket.
BIG = (
    "subscription($t: ID!) { threadEvents(threadId: $t) { seq ... on MessageCreated { "
    + " ".join(f"b{i}: message {{ body }}" for i in range(12))
    + " } } }"
)


async def test_a_subscriber_that_never_reads_is_ended_with_a_resume_signal(
    server: Server, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "SEND_TIMEOUT_SECONDS", 1.0)
    server.runtime.broker._queue_limit = 50
    alice, bob = await clients.user("alice"), await clients.user("bob")
    tid = await factories.thread(alice, bob)
    conn = await websockets.connect(
        server.ws_url,
        subprotocols=["graphql-transport-ws"],
        max_queue=1,
        compression=None,  # type: ignore[list-item]
    )
    await conn.send(json.dumps({"type": "connection_init", "payload": {"token": bob.token}}))
    assert json.loads(await conn.recv())["type"] == "connection_ack"
    await conn.send(
        json.dumps(
            {"id": "1", "type": "subscribe", "payload": {"query": BIG, "variables": {"t": tid}}}
        )
    )
    await until(fanout_members(server, 1))
    body = "x" * 4000
    for _ in range(300):  # ~14 MB of frames that bob never reads
        await factories.send(alice, tid, body)
    # The server gives up on bob (1 s without a frame taken): his subscription no
    # longer holds a broker queue; only the ended-sessions listener is left.
    await until(lambda: server.runtime.broker.health()["subscribers"] <= 1, timeout=20)
    # Reading now, bob gets what the kernel held, then the end: CONFLICT with the
    # afterSeq to resume from, which is exactly the last event he received.
    last_seen = 0
    while True:
        message = json.loads(await asyncio.wait_for(conn.recv(), 10))
        if message["type"] in ("ping", "pong"):  # the server's keep-alive may be queued too
            continue
        errors = (
            message["payload"] if message["type"] == "error" else message["payload"].get("errors")
        )
        if errors:
            error = errors[0]["extensions"]
            break
        last_seen = message["payload"]["data"]["threadEvents"]["seq"]
    assert error["code"] == "CONFLICT"
    assert error["afterSeq"] == last_seen > 0
    await conn.close()
