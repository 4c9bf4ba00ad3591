"""WebSocket protocol edges, in both subprotocols: refusals close once with the
contract's code, malformed messages close with 4400, the subscription limit is a
coded error that leaves the connection up, and none of it logs a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import Clients, Server, start_server, stop_server, token_for
from tests.live import until
from threadline.config import Settings
from threadline.realtime.channels import user_channel

# The WebSocket protocol layer: the SQLite row of the test command skips it.
pytestmark = pytest.mark.any_backend

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
VIEWER = "subscription { viewerEvents { __typename } }"


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records that carry a traceback or are errors: none of these cases may log one."""
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def opened(url: str, protocol: str) -> ClientConnection:
    return await websockets.connect(url, subprotocols=[protocol])  # type: ignore[list-item]


async def acked(url: str, protocol: str, token: str) -> ClientConnection:
    conn = await opened(url, protocol)
    await conn.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    )
    message = await receive(conn)
    assert message["type"] == "connection_ack", message
    return conn


async def receive(conn: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    """The next message other than keep-alives (legacy `ka`, transport `ping`)."""
    while True:
        raw = await asyncio.wait_for(conn.recv(), timeout)
        message: dict[str, Any] = json.loads(raw)
        if message["type"] == "ka":
            continue
        if message["type"] == "ping":
            await conn.send(json.dumps({"type": "pong"}))
            continue
        return message


async def close_code(conn: ClientConnection, timeout: float = 10) -> int | None:
    """Read until the server closes the socket; the code it sent."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(conn.recv(), timeout)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


def subscribe(protocol: str, op_id: Any, payload: Any) -> str:
    kind = "subscribe" if protocol == TRANSPORT else "start"
    return json.dumps({"id": op_id, "type": kind, "payload": payload})


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_refused_token_closes_with_4403_in_both_protocols(
    server: Server, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await opened(server.ws_url, protocol)
    await conn.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer nope"}})
    )
    assert await close_code(conn) == 4403
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_token_with_a_lone_surrogate_closes_with_4403(
    server: Server, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Rule (CONTRACT: a bad token closes with 4403). Evidence: a lone surrogate in the
    connection_init token (JSON allows the escape) made PyJWT raise UnicodeEncodeError: the
    socket dropped with no close frame (1006) and "Exception in ASGI application" was logged."""
    conn = await opened(server.ws_url, protocol)
    await conn.send(json.dumps({"type": "connection_init", "payload": {"token": "a\ud800"}}))
    assert await close_code(conn) == 4403
    assert tracebacks(caplog) == []


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[Server]:
    running = await start_server(settings.model_copy(update={"rate_limits": True}))
    yield running
    await stop_server(running)


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_connection_over_the_limit_closes_once_with_4429(
    limited: Server, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with httpx.AsyncClient(base_url=limited.base) as http:
        token = token_for("alice")
        await http.post(
            "/graphql",
            json={"query": "{ me { id } }"},
            headers={"authorization": f"Bearer {token}"},
        )
    accepted = [await acked(limited.ws_url, protocol, token) for _ in range(10)]
    conn = await opened(limited.ws_url, protocol)
    await conn.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    )
    assert await close_code(conn) == 4429
    for open_conn in accepted:
        await open_conn.close()
    # The server's side of the close runs after the client's.
    await until(lambda: not limited.app.state.graphql.connections)
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
@pytest.mark.parametrize(
    ("op_id", "payload"),
    [
        ("1", "subscription { viewerEvents { __typename } }"),
        (1, {"query": VIEWER}),
        (None, {"query": VIEWER}),
        ("1", {"query": 5}),
        ("1", {"query": VIEWER, "variables": "x"}),
    ],
    ids=["string-payload", "int-id", "null-id", "non-string-query", "string-variables"],
)
async def test_a_malformed_subscribe_closes_with_4400(
    server: Server,
    clients: Clients,
    protocol: str,
    op_id: Any,
    payload: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice = await clients.user("alice")
    assert alice.token is not None
    conn = await acked(server.ws_url, protocol, alice.token)
    await conn.send(subscribe(protocol, op_id, payload))
    assert await close_code(conn) == 4400
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_subscribe_past_the_limit_is_rate_limited_and_the_connection_stays(
    server: Server, clients: Clients, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await clients.user("alice")
    assert alice.token is not None
    conn = await acked(server.ws_url, protocol, alice.token)
    ceiling = server.runtime.settings.max_subscriptions_per_connection
    for i in range(ceiling):
        await conn.send(subscribe(protocol, str(i), {"query": VIEWER}))
    streams = server.runtime.broker.listeners
    await until(lambda: len(streams(user_channel(alice.id))) == ceiling)
    await conn.send(subscribe(protocol, "over", {"query": VIEWER}))
    message = await receive(conn)
    assert message["type"] == "error", message
    assert message["id"] == "over"
    payload = message["payload"]
    error = payload[0] if isinstance(payload, list) else payload
    assert error["extensions"]["code"] == "RATE_LIMITED", error
    assert error["extensions"]["retryAfter"] >= 1
    # The connection stays: ending one subscription makes room for another.
    stop = "complete" if protocol == TRANSPORT else "stop"
    await conn.send(json.dumps({"id": "0", "type": stop}))
    await until(lambda: len(streams(user_channel(alice.id))) == ceiling - 1)
    presence = "subscription($u: [ID!]!) { presence(userIds: $u) { user { username } } }"
    await conn.send(
        subscribe(protocol, "again", {"query": presence, "variables": {"u": [alice.id]}})
    )
    while True:
        message = await receive(conn)
        if message.get("id") == "again":
            break
    assert message["type"] in {"next", "data"}, message
    assert message["payload"]["data"]["presence"]["user"]["username"] == "alice"
    await conn.close()
    assert tracebacks(caplog) == []


async def test_a_subscription_over_get_is_a_clean_client_error(
    server: Server, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await clients.user("alice")
    response = await alice.http.get(
        "/graphql",
        params={"query": VIEWER},
        headers={"authorization": f"Bearer {alice.token}", "accept": "application/json"},
    )
    # As over POST: a GraphQL answer with a code, not a query run on a subscription field.
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    assert "subscription" in body["errors"][0]["message"].lower()
    assert tracebacks(caplog) == []


async def test_a_query_over_the_legacy_protocol_is_bad_user_input(
    server: Server, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await clients.user("alice")
    assert alice.token is not None
    conn = await acked(server.ws_url, LEGACY, alice.token)
    await conn.send(subscribe(LEGACY, "q", {"query": "{ me { username } }"}))
    message = await receive(conn)
    assert message["type"] == "error", message
    assert message["payload"]["extensions"]["code"] == "BAD_USER_INPUT"
    await conn.close()
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_socket_that_never_sends_connection_init_closes_with_4408_in_both_protocols(
    server: Server, clients: Clients, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The deadline is the view's (10 s in production); a short one keeps the test quick.
    server.app.state.graphql.connection_init_wait_timeout = timedelta(seconds=1)
    alice = await clients.user("alice")
    assert alice.token is not None
    idle = await opened(server.ws_url, protocol)
    started = time.monotonic()
    signed_in = await acked(server.ws_url, protocol, alice.token)
    assert await close_code(idle, timeout=15) == 4408
    assert time.monotonic() - started >= 0.9
    # A socket that sent connection_init in time stays open past the deadline.
    await asyncio.sleep(1.0)
    await signed_in.send(subscribe(protocol, "1", {"query": VIEWER}))
    await signed_in.close()
    assert signed_in.close_code == 1000
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
@pytest.mark.parametrize(
    "frame", ["not json", "{", b'{"type": "connection_init"}'], ids=["text", "cut", "binary"]
)
async def test_a_frame_that_is_not_json_text_closes_with_4400_in_both_protocols(
    server: Server, protocol: str, frame: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await opened(server.ws_url, protocol)
    await conn.send(frame)
    assert await close_code(conn) == 4400
    assert tracebacks(caplog) == []
