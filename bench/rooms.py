"""Rooms: many WebSocket connections over many small threads, a realistic mix.

Each connection is one user, a member of one thread of `--members`, subscribed to
`threadEvents` of that thread (with `afterSeq`) and to `viewerEvents`. Senders are
picked at random at a steady total rate (`sendMessage` over HTTP, the send time in
the body); `setTyping` calls come at their own rate; connections close and reopen
(`--churn` a second: presence goes OFFLINE/ONLINE, the thread resumes with
`afterSeq` = the last seq seen). Load processes (pinned to core 1) hold the
sockets; each server process is pinned to core 0.

Reported per configuration (one JSON line each, then a summary):
- threadEvents delivered/expected: expected = members x messages acknowledged,
  since a reopened connection replays what it missed; gaps and duplicates;
- p50/p99 send-to-receive of threadEvents received live (sent after the
  receiving subscription was requested);
- viewerEvents delivered/expected on the connections that were never closed
  (one ThreadActivityForViewer per message to each member, the author too); a
  closed connection's viewerEvents are lost by design (no resume), so only
  counted as delivered;
- server RSS per connection: (RSS with every connection open - RSS idle) / N;
- server CPU per delivery: server CPU during the measured phase (sends, typing,
  churn, presence included) / (threadEvents + viewerEvents delivered).

usage: .venv/bin/python -m bench.rooms [--connections 10000] [--members 5] [--rate 100]
       [--seconds 30] [--servers 1,2] [--cluster REDIS_NODE_URL] [--pgbouncer]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import websockets

from bench.harness import (
    PARTICIPANT_COLUMNS,
    PG,
    THREAD_COLUMNS,
    USER_COLUMNS,
    RawHTTP,
    Server,
    cores_line,
    database,
    gc_pause_summary,
    percentile,
    server,
    token,
)

THREAD_EVENTS = """subscription($t: ID!, $after: Int) {
  threadEvents(threadId: $t, afterSeq: $after) { __typename seq
    ... on MessageCreated { message { id seq body clientId createdAt pinned replyCount
      parent { id } author { id username displayName imageUrl } attachments { id } } } } }"""
VIEWER_EVENTS = """subscription { viewerEvents { __typename
  ... on ThreadActivityForViewer { thread { id title lastMessageAt lastSeq unreadCount
    lastReadSeq myRole lastMessage { id body author { id displayName } } } }
  ... on ThreadMembershipChanged { threadId role } } }"""
SEND = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id seq } }"
TYPING = "mutation($t: ID!) { setTyping(threadId: $t, isTyping: true) }"
HTTP_PER_SERVER = 8  # keep-alive connections each load process holds to each server


def raise_open_files() -> None:
    """Every socket is a file: lift the soft limit to the hard one (children inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------- the load process


@dataclass
class Counters:
    sent: int = 0
    send_errors: int = 0
    typing: int = 0
    typing_errors: int = 0
    reconnects: int = 0
    unexpected_closes: int = 0
    gaps: int = 0
    duplicates: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what[:300]


class Room:
    def __init__(self, thread_id: str, usernames: list[str]) -> None:
        self.id = thread_id
        self.top = 1  # the highest seq a send was acknowledged with (1: seeded)
        self.base = 0  # seq at the start of the measured phase
        self.members = [Member(self, name) for name in usernames]


class Member:
    """One user's connection: threadEvents of its room (id 1) and viewerEvents (id 2)."""

    def __init__(self, room: Room, username: str) -> None:
        self.room = room
        self.token = token(username)
        self.url = ""
        self.ws: websockets.ClientConnection | None = None
        self.listener: asyncio.Task[None] | None = None
        self.last_seq = 0
        self.subscribed_at = 0.0
        self.thread_delivered = 0  # events with seq > room.base
        self.viewer_delivered = 0
        self.closed_in_phase = False
        self.closing = False
        self.live = asyncio.Event()

    async def open(self, counters: Counters) -> None:
        ws = await websockets.connect(
            self.url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
            open_timeout=120,
            max_queue=None,
        )
        await ws.send(
            orjson.dumps(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {self.token}"}}
            ).decode()
        )
        ack = orjson.loads(await asyncio.wait_for(ws.recv(), 120))
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"no connection_ack: {ack}")
        self.subscribed_at = time.time()
        variables = {"t": self.room.id, "after": self.last_seq}
        for op_id, query, values in (
            ("2", VIEWER_EVENTS, {}),
            ("1", THREAD_EVENTS, variables),
        ):
            payload = {"query": query, "variables": values}
            await ws.send(
                orjson.dumps({"id": op_id, "type": "subscribe", "payload": payload}).decode()
            )
        self.ws = ws
        self.closing = False
        self.listener = asyncio.create_task(self.listen(ws, counters))
        if self.last_seq == 0:
            # The replay of the seeded event says the subscription is set up: the
            # load processes open the next connection only then, so the server is
            # never handed more handshakes than it can take (each waits for a
            # database connection, at most 30 s).
            await asyncio.wait_for(self.live.wait(), 120)

    async def listen(self, ws: websockets.ClientConnection, counters: Counters) -> None:
        try:
            async for raw in ws:
                received = time.time()
                message = orjson.loads(raw)
                kind = message.get("type")
                if kind == "ping":
                    await ws.send('{"type":"pong"}')
                    continue
                if kind != "next":
                    counters.error(f"{kind}: {str(message)[:250]}")
                    continue
                payload = message["payload"]
                if payload.get("errors"):
                    counters.error(str(payload["errors"]))
                    continue
                if message["id"] == "2":
                    self.viewer_delivered += 1
                    continue
                self.thread_event(payload["data"]["threadEvents"], received, counters)
        except websockets.ConnectionClosed:
            pass
        if not self.closing:  # the server closed it: a real client comes back
            counters.unexpected_closes += 1
            counters.error(f"closed by the server: {ws.close_code} {ws.close_reason}")
            self.closed_in_phase = True
            self.ws = None
            await asyncio.sleep(1)
            with contextlib.suppress(Exception):
                await self.open(counters)

    def thread_event(self, event: dict[str, Any], received: float, counters: Counters) -> None:
        seq = int(event["seq"])
        if seq <= self.last_seq:
            counters.duplicates += 1
            return
        if seq != self.last_seq + 1:
            counters.gaps += 1
        self.last_seq = seq
        self.live.set()
        if seq > self.room.base:
            self.thread_delivered += 1
            body = event["message"]["body"] if "message" in event else ""
            sent_at = float(body.partition(" t=")[2] or 0)
            if sent_at >= self.subscribed_at:  # live, not replayed after a reconnect
                counters.latencies.append((received - sent_at) * 1000)

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            await self.ws.close()
        if self.listener is not None:
            await self.listener
        self.ws = self.listener = None


class Load:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.rooms = [Room(tid, names) for tid, names in spec["rooms"]]
        self.members = [m for room in self.rooms for m in room.members]
        servers = spec["ws"]
        for k, member in enumerate(self.members):  # a room's members on different servers
            member.url = servers[(spec["offset"] + k) % len(servers)]
        self.bases: list[str] = spec["http"]
        self.spec = spec
        self.counters = Counters()
        self.pools: dict[str, asyncio.Queue[RawHTTP]] = {}

    async def connect(self) -> int:
        for base in self.bases:
            pool: asyncio.Queue[RawHTTP] = asyncio.Queue()
            for _ in range(HTTP_PER_SERVER):
                pool.put_nowait(RawHTTP(base, ""))
            self.pools[base] = pool
        failed = 0
        gate = asyncio.Semaphore(
            int(os.environ.get("ROOMS_GATE", "10"))
        )  # handshakes in flight per load process

        async def one(member: Member) -> None:
            nonlocal failed
            async with gate:
                try:
                    await member.open(self.counters)
                except Exception as exc:  # counted and reported, the run goes on
                    failed += 1
                    self.counters.error(f"connect: {exc!r}")

        await asyncio.gather(*(one(m) for m in self.members))
        return failed

    async def call(self, query: str, variables: dict[str, object], tok: str) -> dict[str, Any]:
        pool = self.pools[random.choice(self.bases)]
        client = await pool.get()
        try:
            try:
                return await client.gql(query, variables, tok)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed an idle keep-alive connection (after 5 s): once
                # more on a fresh one, as an HTTP client does.
                await client.close()
                return await client.gql(query, variables, tok)
        except Exception:
            await client.close()  # a fresh connection for the next caller
            raise
        finally:
            pool.put_nowait(client)

    async def send(self, k: int) -> None:
        room = random.choice(self.rooms)
        author = random.choice(room.members)
        body = f"m{k} t={time.time():.6f}"
        try:
            # A clientId: a send retried on a fresh connection is stored once.
            send = {"threadId": room.id, "body": body, "clientId": f"{self.spec['offset']}-{k}"}
            data = await self.call(SEND, {"i": send}, author.token)
        except Exception as exc:
            self.counters.send_errors += 1
            self.counters.error(f"send: {exc!r}")
            return
        room.top = max(room.top, int(data["sendMessage"]["seq"]))
        self.counters.sent += 1

    async def type_(self, _: int) -> None:
        room = random.choice(self.rooms)
        author = random.choice(room.members)
        try:
            await self.call(TYPING, {"t": room.id}, author.token)
        except Exception as exc:
            self.counters.typing_errors += 1
            self.counters.error(f"setTyping: {exc!r}")
            return
        self.counters.typing += 1

    async def churn_one(self) -> None:
        member = random.choice(self.members)
        if member.ws is None:
            return
        member.closed_in_phase = True
        await member.close()
        await asyncio.sleep(random.uniform(0.2, 2.0))  # offline a while
        try:
            await member.open(self.counters)
            self.counters.reconnects += 1
        except Exception as exc:
            self.counters.error(f"reconnect: {exc!r}")

    @staticmethod
    async def steady(rate: float, seconds: float, action: Any) -> None:
        """Open loop: `rate` calls a second for `seconds`, whatever the answers take."""
        if rate <= 0:
            await asyncio.sleep(seconds)
            return
        loop = asyncio.get_running_loop()
        started, k, pending = loop.time(), 0, set()
        while (elapsed := loop.time() - started) < seconds:
            while k < int(elapsed * rate):
                task = asyncio.create_task(action(k))
                pending.add(task)
                task.add_done_callback(pending.discard)
                k += 1
            await asyncio.sleep(0.005)
        if pending:
            await asyncio.wait(pending)

    async def drain(self, timeout: float) -> None:
        """Until every connection has seen its room's last acknowledged seq, and every
        steady one its viewerEvents, or the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = any(m.last_seq < m.room.top for m in self.members if m.ws is not None)
            if not behind and self.viewer_expected() <= self.viewer_delivered():
                return
            await asyncio.sleep(0.05)

    def reset(self) -> None:
        for room in self.rooms:
            room.base = room.top
        for m in self.members:
            m.thread_delivered = m.viewer_delivered = 0
            m.closed_in_phase = m.ws is None
        # In place: every connection's listener holds this object.
        c = self.counters
        c.__dict__.update(Counters(first_error=c.first_error, errors=c.errors).__dict__)

    def viewer_expected(self) -> int:
        return sum(m.room.top - m.room.base for m in self.members if not m.closed_in_phase)

    def viewer_delivered(self) -> int:
        return sum(m.viewer_delivered for m in self.members if not m.closed_in_phase)

    async def phase(self, seconds: float, churn: bool) -> None:
        spec = self.spec
        actions = [
            self.steady(spec["rate"], seconds, self.send),
            self.steady(spec["typing"], seconds, self.type_),
        ]
        if churn:
            actions.append(self.steady(spec["churn"], seconds, lambda _: self.churn_one()))
        await asyncio.gather(*actions)
        await self.drain(20)

    def result(self) -> dict[str, Any]:
        c = self.counters
        return {
            "sent": c.sent,
            "sendErrors": c.send_errors,
            "typing": c.typing,
            "typingErrors": c.typing_errors,
            "threadExpected": sum(
                len(room.members) * (room.top - room.base) for room in self.rooms
            ),
            "threadDelivered": sum(m.thread_delivered for m in self.members),
            "gaps": c.gaps,
            "duplicates": c.duplicates,
            "viewerExpected": self.viewer_expected(),
            "viewerDelivered": self.viewer_delivered(),
            "viewerAll": sum(m.viewer_delivered for m in self.members),
            "steady": sum(1 for m in self.members if not m.closed_in_phase),
            "reconnects": c.reconnects,
            "unexpectedCloses": c.unexpected_closes,
            "errors": c.errors,
            "firstError": c.first_error,
            "latencies": [round(x, 2) for x in c.latencies],
        }

    async def close(self) -> None:
        await asyncio.gather(*(m.close() for m in self.members if m.ws is not None))
        for pool in self.pools.values():
            while not pool.empty():
                await pool.get_nowait().close()


async def worker() -> None:
    """A load process: its spec on stdin, then one command a line; one JSON answer a line."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)  # a spec of thousands of connections
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(data: dict[str, Any]) -> None:
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
        sys.stdout.flush()

    load = Load(orjson.loads(await reader.readline()))
    started = time.monotonic()
    failed = await load.connect()
    answer({"connected": len(load.members) - failed, "seconds": time.monotonic() - started})
    while command := (await reader.readline()).decode().strip():
        if command == "warm":
            await load.phase(load.spec["warm"], churn=False)
            load.reset()
            answer({"warmed": True})
        elif command == "run":
            await load.phase(load.spec["seconds"], churn=True)
            answer(load.result())
        elif command == "close":
            break
    await load.close()


# ---------------------------------------------------------------- the conductor


async def seed(dsn: str, threads: int, members: int) -> list[tuple[str, list[str]]]:
    """`threads` threads of `members` users each (one user per connection), by COPY."""
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    rooms: list[tuple[str, list[str]]] = []
    users, thread_rows, participants, events = [], [], [], []
    for t in range(threads):
        tid = uuid.uuid4()
        names = [f"room{t}m{k}" for k in range(members)]
        ids = [uuid.uuid4() for _ in names]
        users += [
            (uid, f"dev_{n}", n, n, "MEMBER", "{}", now, now)
            for uid, n in zip(ids, names, strict=True)
        ]
        thread_rows.append((tid, f"Room {t}", False, ids[0], now, now, None, now, 1))
        # seq 1, "the room was named": what a first subscription replays.
        payload = {"id": str(tid), "title": f"Room {t}", "description": None, "updated_at": ""}
        events.append((tid, 1, "ThreadUpdated", orjson.dumps(payload).decode(), ids[0], now))
        participants += [
            (tid, uid, "OWNER" if k == 0 else "MEMBER", now, 0, 0, False)
            for k, uid in enumerate(ids)
        ]
        rooms.append((str(tid), names))
    await conn.copy_records_to_table(
        "users",
        records=users,
        columns=USER_COLUMNS,
    )
    await conn.copy_records_to_table(
        "threads",
        records=thread_rows,
        columns=THREAD_COLUMNS,
    )
    await conn.copy_records_to_table(
        "thread_participants",
        records=participants,
        columns=PARTICIPANT_COLUMNS,
    )
    await conn.copy_records_to_table(
        "thread_events",
        records=events,
        columns=["thread_id", "seq", "kind", "payload", "actor_id", "at"],
    )
    await conn.execute("ANALYZE")
    await conn.close()
    return rooms


class LoadProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, spec: dict[str, Any], pin: str | None) -> LoadProcess:
        command = [sys.executable, "-m", "bench.rooms", "--worker"]
        if pin is not None:
            command = ["taskset", "-c", pin, *command]
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**26
        )
        load = cls(proc)
        await load.tell(orjson.dumps(spec).decode())
        return load

    async def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a load process ended early")
        return orjson.loads(line)  # type: ignore[no-any-return]

    async def ask(self, command: str) -> dict[str, Any]:
        await self.tell(command)
        return await self.answer()

    async def stop(self) -> None:
        with contextlib.suppress(OSError):
            await self.tell("close")
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def server_env(args: argparse.Namespace, dsn: str) -> tuple[str, dict[str, str]]:
    """The servers' DATABASE_URL and extra environment of this configuration."""
    url = "postgresql+asyncpg://" + dsn.removeprefix("postgresql://")
    env: dict[str, str] = {}
    if args.cluster:
        env |= {"REDIS_URL": args.cluster, "REDIS_CLUSTER": "on"}
    elif args.redis:
        env["REDIS_URL"] = args.redis
    if args.pgbouncer:
        name = dsn.rsplit("/", 1)[1]
        url = f"postgresql+asyncpg://postgres@127.0.0.1:6432/{name}"
        env["DATABASE_POOLER"] = "pgbouncer"
    return url, env


async def run_config(args: argparse.Namespace, processes: int) -> dict[str, Any]:
    threads = args.connections // args.members
    started = time.monotonic()
    async with database() as (dsn, _), contextlib.AsyncExitStack() as stack:
        rooms = await seed(dsn, threads, args.members)
        url, env = server_env(args, dsn)
        servers: list[Server] = [
            await stack.enter_async_context(server(url, pin=args.server_cores, extra_env=env))
            for _ in range(processes)
        ]
        await asyncio.sleep(2)
        idle = sum(s.rss_kib() for s in servers)
        per_load = -(-threads // args.loads)
        loads = []
        for w in range(args.loads):
            part = rooms[w * per_load : (w + 1) * per_load]
            spec = {
                "rooms": part,
                "offset": w * per_load * args.members,
                "ws": [s.ws_url for s in servers],
                "http": [s.base for s in servers],
                "rate": args.rate * len(part) / threads,
                "typing": args.typing * len(part) / threads,
                "churn": args.churn * len(part) / threads,
                "seconds": args.seconds,
                "warm": args.warm,
            }
            loads.append(await LoadProcess.start(spec, args.load_cores))
        try:
            t0 = time.monotonic()
            connect_cpu0 = sum(s.cpu_seconds() for s in servers)
            opened = await asyncio.gather(*(load.answer() for load in loads))
            connect_seconds = time.monotonic() - t0
            connect_cpu = sum(s.cpu_seconds() for s in servers) - connect_cpu0
            connected = sum(o["connected"] for o in opened)
            await asyncio.sleep(3)  # let the subscriptions settle before weighing the servers
            rss = [s.rss_kib() for s in servers]
            await asyncio.gather(*(load.ask("warm") for load in loads))
            gc_before = [await s.gc_pauses() for s in servers]
            cpu0 = sum(s.cpu_seconds() for s in servers)
            t1 = time.monotonic()
            parts = await asyncio.gather(*(load.ask("run") for load in loads))
            measured = time.monotonic() - t1
            cpu = sum(s.cpu_seconds() for s in servers) - cpu0
            rss_peak = [s.rss_kib() for s in servers]
            gc_after = [await s.gc_pauses() for s in servers]
        finally:
            await asyncio.gather(*(load.stop() for load in loads))
    total = {k: sum(p[k] for p in parts) for k in parts[0] if isinstance(parts[0][k], int)}
    latencies = [x for p in parts for x in p["latencies"]]
    delivered = total["threadDelivered"] + total["viewerAll"]
    return {
        "processes": processes,
        "redis": "cluster" if args.cluster else "one",
        "connections": connected,
        "threads": threads,
        "rate": args.rate,
        "seconds": args.seconds,
        "connectSeconds": round(connect_seconds, 1),
        # Server CPU per connection opened (handshake, auth, session row, both
        # subscriptions, the replay), with the upkeep of those already open.
        "connectCpuMs": round(connect_cpu * 1000 / max(connected, 1), 2),
        **{k: v for k, v in total.items()},
        "lost": total["threadExpected"] - total["threadDelivered"],
        "p50": round(percentile(latencies, 0.5), 1) if latencies else None,
        "p99": round(percentile(latencies, 0.99), 1) if latencies else None,
        "max": round(max(latencies), 1) if latencies else None,
        "rssIdleMiB": round(idle / 1024, 1),
        "rssConnectedMiB": round(sum(rss) / 1024, 1),
        "rssEndMiB": round(sum(rss_peak) / 1024, 1),
        "rssKBPerConnection": round((sum(rss) - idle) * 1.024 / max(connected, 1), 1),
        "serverCpuSeconds": round(cpu, 2),
        "serverCpuUsPerDelivery": round(cpu * 1e6 / max(delivered, 1), 1),
        "deliveriesPerSecond": round(delivered / measured),
        # The collector's pauses in the measured phase (every coroutine waits them out).
        "gcPauses": gc_pause_summary(gc_before, gc_after),
        "firstError": next((p["firstError"] for p in parts if p["firstError"]), None),
        "loadAverage": load_average(),
        "wallSeconds": round(time.monotonic() - started, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=5, help="members (connections) a thread")
    parser.add_argument("--rate", type=float, default=100, help="messages a second, in total")
    parser.add_argument("--typing", type=float, default=50, help="setTyping calls a second")
    parser.add_argument("--churn", type=float, default=20, help="reconnections a second")
    parser.add_argument("--seconds", type=float, default=30, help="the measured phase")
    parser.add_argument("--warm", type=float, default=3, help="warm-up, not measured")
    parser.add_argument("--servers", default="1,2", help="server processes, one run each")
    # Two: four load processes sharing the load core added their own scheduling
    # delay to the latency measured (p50 71 ms against 20 ms with one, at 200 sockets).
    parser.add_argument("--loads", type=int, default=2, help="load processes")
    parser.add_argument("--server-cores", default="0", help="taskset list for the servers")
    parser.add_argument("--load-cores", default="1", help="taskset list for the load")
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/7",
        help="REDIS_URL of the servers: a database of their own (presence sweeps a shared one)",
    )
    parser.add_argument("--cluster", help="a Redis Cluster node URL: REDIS_CLUSTER=on")
    parser.add_argument("--pgbouncer", action="store_true", help="DATABASE_URL on port 6432")
    parser.add_argument("--p99-ms", type=float, default=250)
    args = parser.parse_args()
    raise_open_files()
    if args.worker:
        await worker()
        return
    if (os.cpu_count() or 1) < 2:
        args.server_cores = args.load_cores = None
    # A TERM (timeout, a lead's kill) ends the run like Ctrl-C: servers, load
    # processes and the database are cleaned up on the way out.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    print(cores_line() + f"; database {PG}; load average {load_average()}")
    results = []
    for processes in [int(n) for n in args.servers.split(",")]:
        result = await run_config(args, processes)
        print(orjson.dumps(result).decode(), flush=True)
        results.append(result)
    for r in results:
        ok = r["lost"] == 0 and r["gaps"] == 0 and r["p99"] is not None
        ok = ok and r["p99"] <= args.p99_ms and r["sendErrors"] == 0
        print(
            f"{r['processes']} process(es), {r['redis']} Redis: {r['connections']} connections,"
            f" {r['threads']} threads, {r['rate']:g} messages/s:"
            f" threadEvents {r['threadDelivered']}/{r['threadExpected']}"
            f" (gaps {r['gaps']}, duplicates {r['duplicates']}),"
            f" viewerEvents {r['viewerDelivered']}/{r['viewerExpected']} on"
            f" {r['steady']} steady connections, p50 {r['p50']} ms p99 {r['p99']} ms,"
            f" RSS {r['rssKBPerConnection']} KB/connection,"
            f" CPU {r['serverCpuUsPerDelivery']} us/delivery,"
            f" {r['reconnects']} reconnects, load {r['loadAverage']}:"
            f" {'holds' if ok else 'DOES NOT HOLD'}"
        )


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main())
