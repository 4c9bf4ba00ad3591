"""Ingest: persisted sendMessage calls per second over HTTP on PostgreSQL, 16 concurrent
senders in 16 threads, against two floors at the same concurrency, in the same run: a
bare asyncpg pool doing single-row INSERT ... RETURNING, and the app's own shape without
GraphQL or HTTP (sends that arrive while a batch is stored go together in one
INSERT ... RETURNING, then one Redis pipeline publishes each row).

usage: .venv/bin/python -m bench.ingest [--senders 16] [--seconds 10] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import orjson
import redis.asyncio as redis

from bench.harness import REDIS_URL, RawHTTP, Server, cores_line, database, server, token

SEND = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id seq } }"


async def saturate(
    seconds: float, requests: Sequence[Callable[[int], Awaitable[object]]]
) -> tuple[int, float]:
    """Run each request back to back until the deadline, all of them concurrently.

    Each gets the number done so far (for distinct bodies). (done, seconds taken).
    """
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(request: Callable[[int], Awaitable[object]]) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await request(done)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(r) for r in requests))
    return done, time.perf_counter() - started


async def threadline_rate(srv: Server, senders: int, seconds: float) -> tuple[float, int, float]:
    """(sends/s, sends acknowledged, server CPU seconds per send)."""
    clients = [RawHTTP(srv.base, token(f"sender{i}")) for i in range(senders)]
    threads = []
    for client in clients:
        data = await client.gql('mutation { createThread(input: {title: "ingest"}) { id } }')
        threads.append(data["createThread"]["id"])
    for client, tid in zip(clients, threads, strict=True):  # warm-up
        for _ in range(20):
            await client.gql(SEND, {"i": {"threadId": tid, "body": "warm"}})

    def sender(client: RawHTTP, tid: str) -> Callable[[int], Awaitable[object]]:
        return lambda n: client.gql(SEND, {"i": {"threadId": tid, "body": f"message {n}"}})

    cpu_before = srv.cpu_seconds()
    done, took = await saturate(
        seconds, [sender(c, tid) for c, tid in zip(clients, threads, strict=True)]
    )
    cpu_per_send = (srv.cpu_seconds() - cpu_before) / max(done, 1)
    for client in clients:
        await client.close()
    return done / took, done, cpu_per_send


async def stack_rate(srv: Server, senders: int, seconds: float) -> tuple[float, float]:
    """The GraphQL-over-HTTP stack alone: `{ me { id } }` (signed in, no database
    round trip once the viewer is cached). (requests/s, server CPU per request)."""
    clients = [RawHTTP(srv.base, token(f"sender{i}")) for i in range(senders)]
    query = "{ me { id } }"
    for client in clients:
        await client.gql(query)

    def asker(client: RawHTTP) -> Callable[[int], Awaitable[object]]:
        return lambda _: client.gql(query)

    cpu_before = srv.cpu_seconds()
    done, took = await saturate(seconds, [asker(c) for c in clients])
    cpu = (srv.cpu_seconds() - cpu_before) / max(done, 1)
    for client in clients:
        await client.close()
    return done / took, cpu


async def asyncpg_rate(dsn: str, senders: int, seconds: float) -> float:
    pool = await asyncpg.create_pool(dsn, min_size=senders, max_size=senders)
    async with pool.acquire() as conn:
        await conn.execute(
            "create table if not exists raw_ingest (id bigserial primary key, thread int not null,"
            " body text not null, created_at timestamptz not null default now())"
        )

    def sender(k: int) -> Callable[[int], Awaitable[object]]:
        return lambda n: pool.fetchrow(
            "insert into raw_ingest (thread, body) values ($1, $2) returning id, created_at",
            k,
            f"message {n}",
        )

    done, took = await saturate(seconds, [sender(k) for k in range(senders)])
    await pool.close()
    return done / took


class GroupCommit:
    """Group commit as the app does it: a lone send goes at once; sends that arrive
    while a batch is being stored wait and go together in the next one."""

    INSERT = (
        "insert into raw_ingest (thread, body) select * from unnest($1::int[], $2::text[])"
        " returning id, thread, created_at"
    )

    def __init__(self, conn: asyncpg.Connection, broker: redis.Redis) -> None:
        self.conn, self.broker = conn, broker
        self.pending: list[tuple[int, str, asyncio.Future[object]]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def send(self, thread: int, body: str) -> object:
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.pending.append((thread, body, done))
        if self.flusher is None:
            self.flusher = asyncio.create_task(self.flush())
        return await done

    async def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            rows = await self.conn.fetch(
                self.INSERT, [t for t, _, _ in batch], [b for _, b, _ in batch]
            )
            pipe = self.broker.pipeline(transaction=False)
            for row in rows:
                event = {"id": row["id"], "at": row["created_at"].isoformat()}
                pipe.publish(f"raw:{row['thread']}", orjson.dumps(event))
            await pipe.execute()
            for (_, _, done), row in zip(batch, rows, strict=True):
                done.set_result(row)
        self.flusher = None


async def group_commit_rate(dsn: str, senders: int, seconds: float) -> float:
    conn = await asyncpg.connect(dsn)
    broker = redis.Redis.from_url(REDIS_URL)
    group = GroupCommit(conn, broker)

    def sender(k: int) -> Callable[[int], Awaitable[object]]:
        return lambda n: group.send(k, f"message {n}")

    done, took = await saturate(seconds, [sender(k) for k in range(senders)])
    await broker.aclose()
    await conn.close()
    return done / took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (more than 1: not pinned)"
    )
    args = parser.parse_args()
    print(cores_line())
    async with database() as (dsn, url):
        pin = "0" if args.workers == 1 else None
        async with server(url, pin=pin, workers=args.workers) as srv:
            print(
                f"server: {args.workers} process(es), {'pinned to core 0' if pin else 'not pinned'}"
            )
            rate, done, cpu_per_send = await threadline_rate(srv, args.senders, args.seconds)
            stack, stack_cpu = await stack_rate(srv, args.senders, args.seconds)
        conn = await asyncpg.connect(dsn)
        stored = await conn.fetchval("select count(*) from messages where body like 'message %'")
        await conn.close()
        print(
            f"threadline sendMessage over HTTP: {rate:.0f}/s ({done} acknowledged, {stored} stored;"
            f" server CPU {cpu_per_send * 1e6:.0f} us per send)"
        )
        print(
            f"the stack alone, {{ me {{ id }} }} over HTTP: {stack:.0f}/s"
            f" (server CPU {stack_cpu * 1e6:.0f} us per request)"
        )
        floor = await asyncpg_rate(dsn, args.senders, args.seconds)
        print(f"bare asyncpg INSERT ... RETURNING: {floor:.0f}/s")
        print(
            f"ratio {rate / floor:.2f} (target >= 0.3); the stack alone would be"
            f" {stack / floor:.2f}"
        )
        grouped = await group_commit_rate(dsn, args.senders, args.seconds)
        print(
            f"floor: group-committed INSERT ... RETURNING + Redis publish on asyncpg: "
            f"{grouped:.0f}/s; app/floor {rate / grouped:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
