"""A WebSocket whose client stopped reading, but keeps its TCP connection open (its
kernel answers the zero-window probes), is released once the server closes it, the
keep-alive gives up on it, or the server shuts down: asyncio's ``transport.close()``
waits for the write buffer to drain, which such a peer never lets happen, and uvicorn
only ever closes. Without an abort the connection, its context, subscriptions and
buffers stayed in the process for good, and a graceful shutdown waited for them."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from tests import factories
from tests.conftest import Api, Clients, Server, start_server, stop_server
from tests.live import fanout_members, until
from tests.test_role_changes_live import SET_ROLE, make_owner
from threadline.config import Settings
from threadline.schema.context import Context

EVENTS = "subscription($t: ID!) { threadEvents(threadId: $t) { seq } }"
# The server pings every 2 s and gives up on a peer silent for 2 s more.
KEEPALIVE = 2.0


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Server]:
    running = await start_server(settings, ws_ping_interval=KEEPALIVE, ws_ping_timeout=KEEPALIVE)
    yield running
    await stop_server(running)


class StalledClient:
    """A graphql-transport-ws client on a raw socket with a small receive buffer: it
    reads (and answers pings) until ``stop_reading``, then never reads again."""

    def __init__(self, sock: socket.socket, ws_url: str) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.conn = ClientProtocol(
            parse_uri(ws_url), subprotocols=[Subprotocol("graphql-transport-ws")]
        )
        self.messages: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, server: Server, token: str) -> StalledClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        host, port = server.base.removeprefix("http://").split(":")
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        client = cls(sock, server.ws_url)
        client.conn.send_request(client.conn.connect())
        await client.flush()
        while client.conn.state is not State.OPEN:
            await client.read()
        await client.send({"type": "connection_init", "payload": {"token": token}})
        assert (await client.receive())["type"] == "connection_ack"
        return client

    async def flush(self) -> None:
        await self.loop.sock_sendall(self.sock, b"".join(self.conn.data_to_send()))

    async def send(self, message: dict[str, Any]) -> None:
        self.conn.send_text(json.dumps(message).encode())
        await self.flush()

    async def receive(self) -> dict[str, Any]:
        while not self.messages:
            await self.read()
        return self.messages.pop(0)

    async def read(self) -> None:
        data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), 10)
        assert data, "the server closed the connection"
        self.conn.receive_data(data)
        for event in self.conn.events_received():
            if isinstance(event, Response):
                assert event.status_code == 101, event
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                message = json.loads(event.data)
                if message["type"] != "ping":
                    self.messages.append(message)
        await self.flush()  # pongs, to the server's pings and to graphql-ws's

    async def fill(self, protocol: Any, paused: bool) -> None:
        """Make the server write pongs it cannot send, until its transport buffers some
        (``paused``: until it is over the high-water mark, and pauses its writers)."""
        for _ in range(1000):  # up to 12 MB of pongs; the kernel takes about 4
            if (
                not protocol.writable.is_set()
                if paused
                else protocol.transport.get_write_buffer_size()
            ):
                return
            for _ in range(100):
                self.conn.send_ping(b"x" * 125)
            await self.flush()
            await asyncio.sleep(0)  # the server reads them and writes the pongs
        pytest.fail("the server's side of the socket never filled up")

    def close(self) -> None:
        self.sock.close()


def uvicorn_protocol(server: Server) -> Any:
    """uvicorn's protocol of the test's one WebSocket."""
    (protocol,) = [
        p for p in server.server.server_state.connections if isinstance(p, WebSocketsSansIOProtocol)
    ]
    return protocol


async def stalled(server: Server, clients: Clients) -> tuple[StalledClient, Any, Context, Api, Api]:
    """bob's stalled client, subscribed to a thread with alice (an OWNER); the server's
    protocol and context of his socket; alice and bob."""
    alice, bob = await clients.users("alice", "bob")
    await make_owner(server, alice)
    tid = await factories.thread(alice, bob)
    client = await StalledClient.connect(server, str(bob.token))
    await client.send(
        {"id": "1", "type": "subscribe", "payload": {"query": EVENTS, "variables": {"t": tid}}}
    )
    await until(fanout_members(server, 1))
    (context,) = server.app.state.graphql.connections.values()
    return client, uvicorn_protocol(server), context, alice, bob


async def released(server: Server, protocol: Any, context: Context, timeout: float) -> None:
    graphql = server.app.state.graphql
    await until(lambda: protocol.disconnected and not graphql.connections, timeout=timeout)
    assert context.state.subscriptions == 0
    assert protocol not in server.server.server_state.connections
    assert server.runtime.fanout.stats()["members"] == 0
    await until(lambda: server.runtime.broker.health()["subscribers"] <= 1)


@pytest.mark.parametrize("paused", [False, True], ids=["close_frame_buffered", "writes_paused"])
async def test_a_socket_the_server_closes_while_its_client_does_not_read_is_released(
    server: Server, clients: Clients, paused: bool
) -> None:
    """bob's role changes while his client reads nothing. Either the close frame goes
    into the buffer (uvicorn then closes after its close timeout, shortened here), or
    the buffer is over the high-water mark and the close waits (the keep-alive then
    gives up). asyncio's close then waited for ever: now the transport is aborted."""
    client, protocol, context, alice, bob = await stalled(server, clients)
    try:
        protocol.close_timeout = 1.0  # uvicorn's, 10 s: long for a test
        await client.fill(protocol, paused)
        assert not protocol.close_sent, "the keep-alive gave up before the socket was full"
        await alice.gql(SET_ROLE, {"u": bob.id, "r": "ADMIN"})
        await until(lambda: protocol.close_sent, timeout=2 * KEEPALIVE + 1)
        assert protocol.conn.close_sent.code == (1011 if paused else 4403)
        await released(server, protocol, context, timeout=10)
    finally:
        client.close()


async def test_a_full_socket_the_keepalive_gives_up_on_is_released(
    server: Server, clients: Clients
) -> None:
    """Nobody closes bob's socket; his client, which stopped reading, answers no ping."""
    client, protocol, context, _, _ = await stalled(server, clients)
    try:
        await client.fill(protocol, paused=True)
        assert not protocol.close_sent, "the keep-alive gave up before the socket was full"
        await until(lambda: protocol.close_sent, timeout=2 * KEEPALIVE + 1)
        await released(server, protocol, context, timeout=10)
    finally:
        client.close()


async def test_a_server_stopping_does_not_wait_for_a_client_that_does_not_read(
    server: Server, clients: Clients
) -> None:
    """uvicorn's graceful shutdown waits until every connection is lost."""
    client, protocol, _, _, _ = await stalled(server, clients)
    try:
        await client.fill(protocol, paused=False)
        stopping = asyncio.get_running_loop().time()
        await stop_server(server)
        assert protocol.disconnected
        assert asyncio.get_running_loop().time() - stopping < 5
    finally:
        client.close()


async def test_a_client_that_does_not_read_closing_as_the_server_stops(
    server: Server, clients: Clients
) -> None:
    """bob's client closes while the server's writes to it are still buffered: uvicorn
    answers his close frame and closes, but the connection is lost only once the answer
    is out. A stop meanwhile had uvicorn's shutdown send a close frame of its own on it:
    websockets raised InvalidState ("connection is closing") out of Server.shutdown,
    which stopped half way (other sockets not closed, the app's shutdown not run)."""
    client, protocol, _, _, _ = await stalled(server, clients)
    try:
        await client.fill(protocol, paused=False)
        client.conn.send_close(1000)
        await client.flush()
        await until(protocol.transport.is_closing)  # answered, into the full buffer
        await stop_server(server)
        assert protocol.disconnected
    finally:
        client.close()


async def test_a_client_that_does_not_read_and_half_closes_is_released(
    server: Server, clients: Clients
) -> None:
    """bob's client stops reading, then shuts down its side for writing (a FIN, its
    kernel still answering): asyncio closes the transport itself on the EOF, not through
    the seam's aborting close, and that close waits for a write buffer that never
    drains. The connection was never lost: no keep-alive (it skips a closing transport),
    no close, and a graceful shutdown skipped it too and then waited for it."""
    client, protocol, context, _, _ = await stalled(server, clients)
    try:
        await client.fill(protocol, paused=False)
        client.sock.shutdown(socket.SHUT_WR)
        await until(protocol.transport.is_closing)  # closed on the EOF, into the full buffer
        await released(server, protocol, context, timeout=2 * KEEPALIVE + 2)
    finally:
        client.close()
