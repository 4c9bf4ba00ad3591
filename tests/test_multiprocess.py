"""Several `threadline serve` processes on one PostgreSQL and one Redis behave as one server.

These start real server processes (and, for the restart test, their own
redis-server, or their own Redis Cluster), so they run on the PostgreSQL backends
only: with one Redis, and with a Redis Cluster (sharded pub/sub).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
import redis.asyncio
import websockets
from sqlalchemy import make_url
from svix.webhooks import Webhook

from tests import factories
from tests.conftest import (
    CLUSTER,
    DEV_SECRET,
    ON_POSTGRES,
    SIGNING_SECRET,
    Api,
    Clients,
    Server,
    database_environment,
    free_port,
    redis_environment,
    token_for,
)
from tests.deployment import Outage, threadline
from tests.live import watch_activity
from tests.processes import spawn_serve
from tests.redis_cluster import OwnCluster, master_of
from tests.test_access_matrix import ACTIVITY, REMOVE, TYPING
from tests.test_thread_events import EVENTS
from tests.wsclient import GraphQLWS
from threadline.config import Settings
from threadline.models import ThreadParticipant

pytestmark = pytest.mark.skipif(not ON_POSTGRES, reason="needs PostgreSQL and Redis")

WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Process:
    base: str
    proc: asyncio.subprocess.Process

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/graphql"


async def spawn(settings: Settings, redis_url: str) -> Process:
    port = free_port()
    env = {
        **os.environ,
        **database_environment(settings.database_url),
        **redis_environment(settings),
        "REDIS_URL": redis_url,
        "DEV_AUTH_SECRET": DEV_SECRET,
        "ATTACHMENT_SIGNING_SECRET": SIGNING_SECRET,
        "RATE_LIMITS": "off",
        "CLERK_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    proc = await spawn_serve(port, env)
    return Process(f"http://127.0.0.1:{port}", proc)


async def stop(process: Process) -> None:
    if process.proc.returncode is None:
        process.proc.terminate()
        try:
            await asyncio.wait_for(process.proc.wait(), 10)
        except TimeoutError:
            process.proc.kill()
            await process.proc.wait()


@pytest.fixture
async def two(settings: Settings, redis_url: str) -> AsyncIterator[tuple[Process, Process]]:
    a, b = await asyncio.gather(spawn(settings, redis_url), spawn(settings, redis_url))
    yield a, b
    await asyncio.gather(stop(a), stop(b))


async def signed_in(http: httpx.AsyncClient, username: str, token: str | None = None) -> Api:
    api = Api(http, token or token_for(username), username)
    api.id = (await api.gql("{ me { id } }"))["me"]["id"]
    return api


async def test_a_subscriber_on_one_process_sees_messages_sent_through_another(
    two: tuple[Process, Process],
) -> None:
    a, b = two
    async with httpx.AsyncClient(base_url=b.base, timeout=30) as http:
        alice, bob = await signed_in(http, "alice"), await signed_in(http, "bob")
        tid = await factories.thread(alice, bob)
        ws = await GraphQLWS.connect(a.ws_url, bob.token)
        # From seq 0: no wait for the other process to register it.
        await ws.subscribe(EVENTS, {"t": tid, "after": 0})
        started = time.perf_counter()
        for i in range(30):
            await factories.send(alice, tid, f"via b {i}")
        got = [(await ws.next())["payload"]["data"]["threadEvents"]["seq"] for _ in range(30)]
        elapsed = time.perf_counter() - started
        assert got == list(range(1, 31))
        print(f"30 messages sent on one process, received on the other in {elapsed:.2f} s")
        await ws.close()


async def test_presence_is_the_same_on_every_process(two: tuple[Process, Process]) -> None:
    a, b = two
    query = "query($u: ID!) { user(id: $u) { presence { status } } }"
    async with httpx.AsyncClient(base_url=b.base, timeout=30) as http:
        alice, bob = await signed_in(http, "alice"), await signed_in(http, "bob")
        ws = await GraphQLWS.connect(a.ws_url, bob.token)
        seen = await alice.gql(query, {"u": bob.id})
        assert seen["user"]["presence"]["status"] == "ONLINE"
        await ws.close()
        for _ in range(50):
            seen = await alice.gql(query, {"u": bob.id})
            if seen["user"]["presence"]["status"] == "OFFLINE":
                break
            await asyncio.sleep(0.1)
        assert seen["user"]["presence"]["status"] == "OFFLINE"


async def test_presence_subscribers_see_offline_within_seconds_when_the_process_is_killed(
    two: tuple[Process, Process],
) -> None:
    a, b = two
    query = "query($u: ID!) { user(id: $u) { presence { status } } }"
    watch = "subscription($u: [ID!]!) { presence(userIds: $u) { presence { status } } }"
    async with httpx.AsyncClient(base_url=b.base, timeout=30) as http:
        alice, bob = await signed_in(http, "alice"), await signed_in(http, "bob")
        ws = await GraphQLWS.connect(a.ws_url, bob.token)
        assert (await alice.gql(query, {"u": bob.id}))["user"]["presence"]["status"] == "ONLINE"
        watcher = await GraphQLWS.connect(b.ws_url, alice.token)
        await watcher.subscribe(watch, {"u": [bob.id]})
        first = await watcher.next()
        assert first["payload"]["data"]["presence"]["presence"]["status"] == "ONLINE"
        a.proc.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        # Pushed to the subscriber on the surviving process, not only seen by queries.
        pushed = await watcher.next(timeout=15)
        took = time.perf_counter() - killed
        assert pushed["payload"]["data"]["presence"]["presence"]["status"] == "OFFLINE"
        status = (await alice.gql(query, {"u": bob.id}))["user"]["presence"]["status"]
        print(f"OFFLINE pushed {took:.1f} s after kill -9")
        assert status == "OFFLINE"
        # The heartbeat lapses after 4 s and is checked every second; slack for a busy machine.
        assert took < 10, took
        # The killed process's socket is gone: its session row is closed by the survivor.
        sessions_query = "{ mySessions { disconnectedAt } }"
        for _ in range(50):
            rows = (await bob.gql(sessions_query))["mySessions"]
            if all(row["disconnectedAt"] for row in rows):
                break
            await asyncio.sleep(0.1)
        assert rows and all(row["disconnectedAt"] for row in rows), rows
        await watcher.close()
        with contextlib.suppress(Exception):
            await ws.close()


async def test_an_ended_clerk_session_closes_its_sockets_on_every_process(
    two: tuple[Process, Process],
) -> None:
    a, b = two
    now = int(time.time())
    claims = {
        "sub": "dev_bob",
        "sid": "sess_bob_1",
        "username": "bob",
        "iat": now,
        "exp": now + 600,
    }
    bob_token = jwt.encode(claims, DEV_SECRET, algorithm="HS256")
    async with httpx.AsyncClient(base_url=b.base, timeout=30) as http:
        await signed_in(http, "bob", bob_token)
        ws = await GraphQLWS.connect(a.ws_url, bob_token)
        body = '{"type":"session.ended","data":{"id":"sess_bob_1","user_id":"dev_bob"}}'
        msg_id = "msg_end_1"
        sent_at = datetime.now(UTC)
        signature = Webhook(WEBHOOK_SECRET).sign(msg_id, sent_at, body)
        headers = {
            "svix-id": msg_id,
            "svix-timestamp": str(int(sent_at.timestamp())),
            "svix-signature": signature,
            "content-type": "application/json",
        }
        started = time.perf_counter()
        assert (
            await http.post("/webhooks/clerk", content=body, headers=headers)
        ).status_code == 200
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.conn.recv(), 5)
        took = time.perf_counter() - started
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert took < 3.0, took  # typically well under a second; margin for a loaded machine
        refused = await Api(http, bob_token).raw("{ me { id } }")
        assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_events_committed_while_redis_was_down_still_reach_the_subscriber(
    settings: Settings, tmp_path: Path
) -> None:
    if CLUSTER:
        await _a_master_killed_and_restarted(settings, tmp_path)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"

    async def start_redis() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.3)
        return proc

    redis_proc = await start_redis()

    async def outage(_: str) -> None:
        redis_proc.kill()
        await redis_proc.wait()

    async def restart() -> None:
        nonlocal redis_proc
        redis_proc = await start_redis()
        await asyncio.sleep(1)

    server = await spawn(settings, redis_url)
    try:
        await _every_seq_once_across(server, outage, restart)
    finally:
        await stop(server)
        if redis_proc.returncode is None:
            redis_proc.kill()
            await redis_proc.wait()


async def _a_master_killed_and_restarted(settings: Settings, tmp_path: Path) -> None:
    """The cluster's version: the master serving the thread's channel is killed and
    restarted; the process resubscribes on it and fills the gap from the log."""
    cluster = OwnCluster(tmp_path / "cluster")
    await cluster.start()

    async def outage(tid: str) -> None:
        cluster.kill(await cluster.master_of(f"{settings.redis_prefix}thread:{tid}"))

    server = await spawn(settings, cluster.url)
    try:
        # The killed master comes back with its slots (its cluster config is kept).
        await _every_seq_once_across(server, outage, cluster.start)
    finally:
        await stop(server)
        await cluster.stop()


async def _every_seq_once_across(
    server: Process,
    outage: Callable[[str], Awaitable[None]],
    restart: Callable[[], Awaitable[None]],
) -> None:
    """20 messages before an outage (given the thread id), 20 during, 20 after the
    restart: the subscriber gets every seq once, in order."""
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        alice, bob = await signed_in(http, "alice"), await signed_in(http, "bob")
        tid = await factories.thread(alice, bob)
        ws = await GraphQLWS.connect(server.ws_url, bob.token)
        await ws.subscribe(EVENTS, {"t": tid, "after": 0})
        for i in range(20):
            await factories.send(alice, tid, f"before {i}")
        await outage(tid)
        started = time.perf_counter()
        for i in range(20):  # mutations still succeed: the event log has them
            await factories.send(alice, tid, f"during {i}")
        print(f"20 sends during the outage took {time.perf_counter() - started:.2f} s")
        await restart()
        for i in range(20):
            await factories.send(alice, tid, f"after {i}")
        seqs = []
        while len(seqs) < 60:
            seqs.append((await ws.next(timeout=15))["payload"]["data"]["threadEvents"]["seq"])
        assert seqs == list(range(1, 61))
        await ws.close()


async def test_a_system_role_change_closes_the_users_sockets_on_every_process(
    two: tuple[Process, Process], settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    a, b = two
    async with httpx.AsyncClient(base_url=b.base, timeout=30) as http:
        alice, erin = await signed_in(http, "alice"), await signed_in(http, "erin")
        made = threadline(
            "users",
            "set-role",
            "alice",
            "owner",
            database_url=settings.database_url,
            tmp_path=tmp_path,
            **{**redis_environment(settings), "REDIS_URL": redis_url},
        )  # fmt: skip  (through Redis: both processes forget alice's cached role)
        assert made.returncode == 0, made.stderr
        ws = await GraphQLWS.connect(a.ws_url, erin.token)
        started = time.perf_counter()
        role = "mutation($u: ID!) { setUserRole(userId: $u, role: ADMIN) { role } }"
        assert (await alice.gql(role, {"u": erin.id}))["setUserRole"]["role"] == "ADMIN"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.conn.recv(), 5)
        took = time.perf_counter() - started
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        print(f"setUserRole on one process closed the socket on the other in {took:.2f} s")


@pytest.mark.skipif(not CLUSTER, reason="sharded pub/sub: the cluster row")
async def test_each_process_holds_one_sharded_subscription_connection_per_shard(
    two: tuple[Process, Process], settings: Settings, redis_url: str
) -> None:
    a, b = two
    async with httpx.AsyncClient(base_url=b.base, timeout=30) as http:
        alice, bob = await signed_in(http, "alice"), await signed_in(http, "bob")
        # Threads until every master serves at least one of their channels.
        threads: dict[str, int] = {}
        while len(set(threads.values())) < 3 or len(threads) < 12:
            tid = await factories.thread(alice, bob)
            threads[tid] = await master_of(redis_url, f"{settings.redis_prefix}thread:{tid}")
        sockets = [
            await GraphQLWS.connect(a.ws_url, bob.token),
            await GraphQLWS.connect(b.ws_url, alice.token),
        ]
        for ws in sockets:
            for tid in threads:
                await ws.subscribe(EVENTS, {"t": tid, "after": 0})
        for tid in threads:
            await factories.send(alice, tid, "to every shard")
        for ws in sockets:
            got = [(await ws.next())["payload"]["data"]["threadEvents"]["seq"] for _ in threads]
            assert got == [1] * len(threads)
        masters = sorted(set(threads.values()))
        for port in masters:
            async with redis.asyncio.Redis(port=port) as node:
                names = [client["name"] for client in await node.client_list()]
            for process in (a, b):
                held = names.count(f"threadline-subscriber-{process.proc.pid}")
                assert held == 1, (port, process.proc.pid, names)
        print(f"{len(threads)} threads on {len(masters)} shards: one subscriber connection each")
        for ws in sockets:
            await ws.close()


async def test_a_removal_whose_publish_was_lost_still_hides_the_threads_activity(
    server: Server, clients: Clients, settings: Settings
) -> None:
    """Process A removes bob while its Redis connection is cut: the removal is logged,
    its publish lost. Bob's threadActivity on another process must not go on showing
    the thread's typing to someone who may no longer read it."""
    if CLUSTER:
        pytest.skip("one Redis to put a forwarder in front of")
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    tid = await factories.thread(alice, bob, carol)
    url = make_url(str(settings.redis_url))
    outage = Outage(url.port or 6379)
    a = await spawn(settings, url.set(port=await outage.start()).render_as_string(False))
    try:
        ws = await GraphQLWS.connect(server.ws_url, bob.token)
        await watch_activity(server, ws, ACTIVITY, tid)
        await carol.gql(TYPING, {"t": tid})
        assert (await ws.next())["payload"]["data"]["threadActivity"]["isTyping"] is True
        await outage.cut()
        async with httpx.AsyncClient(base_url=a.base, timeout=30) as http:
            on_a = Api(http, alice.token, "alice")
            await on_a.gql(REMOVE, {"t": tid, "u": bob.id})
        await alice.gql(TYPING, {"t": tid})  # through the test's server: published
        with contextlib.suppress(TimeoutError):
            message = await ws.next(timeout=3)
            assert message["type"] == "complete", message
        await ws.close()
    finally:
        await stop(a)


class Gate:
    """A TCP forwarder to a local server whose traffic towards the server a test holds
    back and lets go: what a process sends meanwhile arrives late, in order."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.open = asyncio.Event()
        self.open.set()

    async def start(self) -> int:
        self.listener = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        return int(self.listener.sockets[0].getsockname()[1])

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        far_reader, far_writer = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(
            self._pipe(reader, far_writer, self.open), self._pipe(far_reader, writer)
        )

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        gate: asyncio.Event | None = None,
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                writer.write(data)
                await writer.drain()
        writer.close()


RECEIPTS = """subscription($t: ID!) { threadActivity(threadId: $t) {
  ... on ReceiptChanged { user { username } lastReadSeq lastDeliveredSeq } } }"""
READ = "mutation($t: ID!, $s: Int!) { markRead(threadId: $t, seq: $s) { id } }"
FETCH = "query($t: ID!) { thread(threadId: $t) { messages(last: 5) { edges { node { id } } } } }"


async def test_a_receipt_that_arrives_late_never_shows_a_marker_moving_back(
    server: Server, clients: Clients, settings: Settings
) -> None:
    """Process B writes carol's delivered marker (read still 0), and its receipt is held
    up on the way to Redis; carol then reads through the test's server. Bob, watching,
    must not see her read marker go from 2 back to 0 when B's receipt comes in."""
    if CLUSTER:
        pytest.skip("one Redis to put a forwarder in front of")
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    tid = await factories.thread(alice, bob, carol)
    for body in ("one", "two"):
        await factories.send(alice, tid, body)
    url = make_url(str(settings.redis_url))
    gate = Gate(url.port or 6379)
    b = await spawn(settings, url.set(port=await gate.start()).render_as_string(False))
    try:
        ws = await GraphQLWS.connect(server.ws_url, bob.token)
        await watch_activity(server, ws, RECEIPTS, tid)
        async with httpx.AsyncClient(base_url=b.base, timeout=30) as http:
            gate.open.clear()
            # Answered once its receipt is published: after the gate opens.
            fetch = asyncio.create_task(Api(http, carol.token, "carol").gql(FETCH, {"t": tid}))
            for _ in range(200):
                if await delivered(server, tid, carol.id) == 2:
                    break
                await asyncio.sleep(0.05)
            await carol.gql(READ, {"t": tid, "s": 2})
            first = (await ws.next())["payload"]["data"]["threadActivity"]
            assert first == {"user": {"username": "carol"}, "lastReadSeq": 2, "lastDeliveredSeq": 2}
            gate.open.set()
            await fetch
        with contextlib.suppress(TimeoutError):
            late = (await ws.next(timeout=3))["payload"]["data"]["threadActivity"]
            assert late["lastReadSeq"] >= 2, late
        await ws.close()
    finally:
        await stop(b)


async def delivered(server: Server, thread_id: str, user_id: str) -> int:
    async with server.runtime.db.reading() as session:
        row = await session.get(ThreadParticipant, (uuid.UUID(thread_id), uuid.UUID(user_id)))
    return row.last_delivered_seq if row is not None else -1
