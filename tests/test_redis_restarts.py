"""Redis restarted (empty: no persistence) under a live server: the state it held
converges again. The server runs with a redis-server of the test's own."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator

import pytest
import websockets

from tests import factories
from tests.conftest import CLUSTER, Clients, Server, free_port, start_server, stop_server
from tests.live import watch_activity
from tests.test_access_matrix import ACTIVITY, TYPING
from tests.test_thread_events import EVENTS
from tests.wsclient import GraphQLWS
from threadline.config import Settings

pytestmark = pytest.mark.skipif(CLUSTER, reason="one redis-server of the test's own")


class OwnRedis:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *(self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no"),
            stdout=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.3)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def restart(self) -> None:
        await self.kill()
        await self.start()


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    redis = OwnRedis(binary)
    await redis.start()
    yield redis
    await redis.kill()


@pytest.fixture
async def server(settings: Settings, own_redis: OwnRedis) -> AsyncIterator[Server]:
    """The test's server, and so its clients', on the test's own Redis."""
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    running = await start_server(settings.model_copy(update={"redis_url": url}))
    yield running
    await stop_server(running)


async def test_typing_announced_before_a_redis_restart_still_expires(
    server: Server, own_redis: OwnRedis, clients: Clients
) -> None:
    server.runtime.typing.window = 2.0  # the 6 s window, shortened for the test
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    await watch_activity(server, ws, ACTIVITY, tid)
    await alice.gql(TYPING, {"t": tid})
    assert (await ws.next())["payload"]["data"]["threadActivity"]["isTyping"] is True
    await own_redis.restart()  # empty: the typing spell's key is gone
    stopped = (await ws.next(timeout=6))["payload"]["data"]["threadActivity"]
    assert (stopped["user"]["username"], stopped["isTyping"]) == ("alice", False)
    await ws.close()


async def test_both_subprotocols_stream_every_seq_once_across_a_redis_restart(
    server: Server, own_redis: OwnRedis, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    modern = await GraphQLWS.connect(server.ws_url, bob.token)
    await modern.subscribe(EVENTS, {"t": tid, "after": 0})
    legacy = await websockets.connect(server.ws_url, subprotocols=["graphql-ws"])  # type: ignore[list-item]
    init = {"type": "connection_init", "payload": {"authorization": f"Bearer {alice.token}"}}
    await legacy.send(json.dumps(init))
    assert json.loads(await asyncio.wait_for(legacy.recv(), 10))["type"] == "connection_ack"
    query = {"query": EVENTS, "variables": {"t": tid, "after": 0}}
    await legacy.send(json.dumps({"type": "start", "id": "1", "payload": query}))
    for phase in ("before", "restarting", "after"):
        for i in range(5):
            await factories.send(alice, tid, f"{phase} {i}")
        if phase == "before":
            await own_redis.kill()
        elif phase == "restarting":
            await own_redis.start()
    seqs = [(await modern.next())["payload"]["data"]["threadEvents"]["seq"] for _ in range(15)]
    legacy_seqs: list[int] = []
    while len(legacy_seqs) < 15:
        message = json.loads(await asyncio.wait_for(legacy.recv(), 10))
        if message["type"] == "data":
            legacy_seqs.append(message["payload"]["data"]["threadEvents"]["seq"])
    assert seqs == legacy_seqs == list(range(1, 16))
    await modern.close()
    await legacy.close()
