"""History latency: p50/p99 of a rich page of 50 messages in a 100k-message thread,
and of `threads(first: 20)` for a user in 500 threads, over HTTP on PostgreSQL.

usage: .venv/bin/python -m bench.history [--messages 100000] [--threads 500] [--requests 300]
                                         [--replica]

--replica: the server reads through DATABASE_READ_URL from the hot standby of
scripts/pg-replica (127.0.0.1:5433), once it has replayed the seeded rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from bench.harness import (
    PARTICIPANT_COLUMNS,
    THREAD_COLUMNS,
    USER_COLUMNS,
    RawHTTP,
    Server,
    cores_line,
    database,
    now_ms,
    percentile,
    server,
    summary,
    token,
)

PAGE = """
query($t: ID!) { thread(threadId: $t) { messages(last: 50) { edges { node {
  author { id } reactions { emoji users { id } } attachments { id }
  parent { author { id } } replyCount edits { id } mentions { id }
  readBy(first: 3) { edges { node { id } } } } } } } }
"""
THREADS = (
    "{ threads(first: 20) { edges { node {"
    " id title lastSeq unreadCount lastMessage { body } } } } }"
)


async def seed(dsn: str, messages: int, threads: int) -> uuid.UUID:
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    people = [(uuid.uuid4(), f"user{i}") for i in range(20)]
    alice = (uuid.uuid4(), "alice")
    people.insert(0, alice)
    await conn.copy_records_to_table(
        "users",
        records=[
            (pid, f"dev_{name}", name, name, "MEMBER", "{}", now, now) for pid, name in people
        ],
        columns=USER_COLUMNS,
    )
    big = uuid.uuid4()
    thread_rows = [(big, "History", False, alice[0], now, now, now, now, messages)]
    others = [uuid.uuid4() for _ in range(threads - 1)]
    for i, tid in enumerate(others):
        at = now - timedelta(minutes=i + 1)
        thread_rows.append((tid, f"Room {i}", False, alice[0], at, at, at, at, 1))
    await conn.copy_records_to_table(
        "threads",
        records=thread_rows,
        columns=THREAD_COLUMNS,
    )
    participants = [
        (
            big,
            pid,
            "OWNER" if pid == alice[0] else "MEMBER",
            now,
            messages - 10,
            messages - 5,
            False,
        )
        for pid, _ in people
    ]
    participants += [(tid, alice[0], "OWNER", now, 0, 0, False) for tid in others]
    await conn.copy_records_to_table(
        "thread_participants",
        records=participants,
        columns=PARTICIPANT_COLUMNS,
    )
    rows, ids = [], []
    start = now - timedelta(seconds=messages)
    for seq in range(1, messages + 1):
        mid = uuid.uuid4()
        ids.append(mid)
        author = people[seq % len(people)][0]
        parent = ids[seq - 8] if seq % 7 == 0 and seq > 8 else None
        mentions = json.dumps([str(people[1][0])]) if seq % 5 == 0 else "[]"
        rows.append(
            (
                mid,
                big,
                seq,
                author,
                f"message {seq} about the launch",
                parent,
                mentions,
                False,
                start + timedelta(seconds=seq),
            )
        )
    rows += [(uuid.uuid4(), tid, 1, alice[0], "hello", None, "[]", False, now) for tid in others]
    await conn.copy_records_to_table(
        "messages",
        records=rows,
        columns=[
            "id",
            "thread_id",
            "seq",
            "author_id",
            "body",
            "parent_id",
            "mention_ids",
            "pinned",
            "created_at",
        ],
    )
    reactions = []
    for seq in range(1, messages + 1, 3):
        for k in range(3):
            reactions.append((uuid.uuid4(), ids[seq - 1], people[k][0], "👍🎉🔥"[k], now))
    await conn.copy_records_to_table(
        "reactions",
        records=reactions,
        columns=["id", "message_id", "user_id", "emoji", "created_at"],
    )
    edits = [
        (uuid.uuid4(), ids[s - 1], f"draft {s}", people[0][0], now)
        for s in range(1, messages + 1, 11)
    ]
    await conn.copy_records_to_table(
        "message_edits",
        records=edits,
        columns=["id", "message_id", "previous_body", "edited_by_id", "edited_at"],
    )
    await conn.execute("ANALYZE")
    await conn.close()
    return big


async def measure(
    srv: Server, client: RawHTTP, query: str, variables: dict[str, object], n: int
) -> tuple[list[float], float]:
    """Latencies in ms, and the server's CPU per request in ms."""
    for _ in range(20):
        await client.gql(query, variables)
    out = []
    cpu_before = srv.cpu_seconds()
    for _ in range(n):
        t0 = now_ms()
        await client.gql(query, variables)
        out.append(now_ms() - t0)
    return out, (srv.cpu_seconds() - cpu_before) * 1000 / n


async def replica_of(dsn: str, url: str) -> str:
    """The standby's URL for this database, once it has replayed everything seeded."""
    primary = await asyncpg.connect(dsn)
    target = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
    name = await primary.fetchval("SELECT current_database()")
    await primary.close()
    standby = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5433/{name}")
    deadline = time.monotonic() + 300
    while not await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", target):
        if time.monotonic() > deadline:
            raise SystemExit("the standby on 127.0.0.1:5433 did not catch up in 300 s")
        await asyncio.sleep(0.1)
    await standby.close()
    return url.replace(url.split("@", 1)[1].split("/", 1)[0], "127.0.0.1:5433", 1)


# The floor: the same page's rows read with hand SQL of the app's reads (access,
# the page, then one batch a kind, as the page's loaders do) on one asyncpg
# connection, and encoded with orjson; no GraphQL, no HTTP.
FLOOR_SQL = {
    "viewer": "select id, role from users where clerk_id = $1",
    "access": "select t.id, t.last_seq, p.role from threads t left join thread_participants p"
    " on p.thread_id = t.id and p.user_id = $2 where t.id = $1 and t.deleted_at is null",
    "page": "select id, seq, author_id, parent_id, mention_ids from messages"
    " where thread_id = $1 order by seq desc limit 51",
    "parents": "select id, author_id from messages where id = any($1::uuid[])",
    "replies": "select parent_id, count(*) from messages where parent_id = any($1::uuid[])"
    " and deleted_at is null group by parent_id",
    "reactions": "select message_id, emoji, user_id from reactions"
    " where message_id = any($1::uuid[]) order by message_id, created_at, id",
    "edits": "select id, message_id from (select id, message_id, row_number() over (partition"
    " by message_id order by edited_at desc, id desc) as newness from message_edits"
    " where message_id = any($1::uuid[])) e where newness <= 50",
    "attachments": "select id, message_id from attachments where message_id = any($1::uuid[])"
    " order by created_at, id",
    "markers": "select user_id, last_read_seq from thread_participants where thread_id = $1",
    "users": "select id from users where id = any($1::uuid[])",
}


async def floor_page(conn: asyncpg.Connection, thread_id: uuid.UUID) -> bytes:
    viewer = await conn.fetchrow(FLOOR_SQL["viewer"], "dev_alice")
    await conn.fetchrow(FLOOR_SQL["access"], thread_id, viewer["id"])
    rows = list(reversed(await conn.fetch(FLOOR_SQL["page"], thread_id)))[-50:]
    ids = [r["id"] for r in rows]
    parent_ids = list({r["parent_id"] for r in rows if r["parent_id"]})
    parents = {r["id"]: r["author_id"] for r in await conn.fetch(FLOOR_SQL["parents"], parent_ids)}
    replies = dict(await conn.fetch(FLOOR_SQL["replies"], ids))
    reactions: dict[uuid.UUID, dict[str, list[uuid.UUID]]] = {}
    for mid, emoji, uid in await conn.fetch(FLOOR_SQL["reactions"], ids):
        reactions.setdefault(mid, {}).setdefault(emoji, []).append(uid)
    edits: dict[uuid.UUID, list[uuid.UUID]] = {}
    for eid, mid in await conn.fetch(FLOOR_SQL["edits"], ids):
        edits.setdefault(mid, []).append(eid)
    attachments: dict[uuid.UUID, list[uuid.UUID]] = {}
    for aid, mid in await conn.fetch(FLOOR_SQL["attachments"], ids):
        attachments.setdefault(mid, []).append(aid)
    markers = await conn.fetch(FLOOR_SQL["markers"], thread_id)
    people = {r["author_id"] for r in rows} | set(parents.values())
    people |= {u for groups in reactions.values() for us in groups.values() for u in us}
    mentions = {r["id"]: [uuid.UUID(m) for m in json.loads(r["mention_ids"])] for r in rows}
    people |= {u for ms in mentions.values() for u in ms}
    readers = {
        r["id"]: sorted(
            m["user_id"]
            for m in markers
            if m["user_id"] != r["author_id"] and m["last_read_seq"] >= r["seq"]
        )[:3]
        for r in rows
    }
    people |= {u for rs in readers.values() for u in rs}
    known = {r["id"] for r in await conn.fetch(FLOOR_SQL["users"], list(people))}

    def user(uid: uuid.UUID | None) -> dict[str, object] | None:
        return {"id": str(uid)} if uid in known else None

    edges = [
        {
            "node": {
                "author": user(r["author_id"]),
                "reactions": [
                    {"emoji": e, "users": [user(u) for u in us]}
                    for e, us in reactions.get(r["id"], {}).items()
                ],
                "attachments": [{"id": str(a)} for a in attachments.get(r["id"], [])],
                "parent": {"author": user(parents.get(r["parent_id"]))} if r["parent_id"] else None,
                "replyCount": replies.get(r["id"], 0),
                "edits": [{"id": str(e)} for e in edits.get(r["id"], [])],
                "mentions": [user(u) for u in mentions[r["id"]]],
                "readBy": {"edges": [{"node": user(u)} for u in readers[r["id"]]]},
            }
        }
        for r in rows
    ]
    return orjson.dumps({"data": {"thread": {"messages": {"edges": edges}}}})


async def measure_floor(dsn: str, thread_id: uuid.UUID, n: int) -> tuple[list[float], float]:
    """Latencies in ms of the floor's page, and its CPU per page in ms (this process)."""
    conn = await asyncpg.connect(dsn)
    for _ in range(20):
        await floor_page(conn, thread_id)
    out = []
    cpu_before = time.process_time()
    for _ in range(n):
        t0 = now_ms()
        await floor_page(conn, thread_id)
        out.append(now_ms() - t0)
    cpu = (time.process_time() - cpu_before) * 1000 / n
    await conn.close()
    return out, cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=500)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--replica", action="store_true")
    args = parser.parse_args()
    print(cores_line())
    async with database() as (dsn, url):
        t0 = now_ms()
        big = await seed(dsn, args.messages, args.threads)
        print(
            f"seeded {args.messages} messages and {args.threads} threads "
            f"in {(now_ms() - t0) / 1000:.1f} s"
        )
        if args.replica:
            os.environ["DATABASE_READ_URL"] = await replica_of(dsn, url)
            print("reading from the standby on 127.0.0.1:5433 (DATABASE_READ_URL)")
        async with server(url, redis=False) as srv:
            client = RawHTTP(srv.base, token("alice"))
            page, page_cpu = await measure(srv, client, PAGE, {"t": str(big)}, args.requests)
            print(
                summary(
                    "messages(last: 50) with authors, reactions, parents, edits, mentions, readBy",
                    page,
                )
                + f" server CPU {page_cpu:.2f} ms"
            )
            threads, threads_cpu = await measure(srv, client, THREADS, {}, args.requests)
            print(
                summary(f"threads(first: 20) for a user in {args.threads} threads", threads)
                + f" server CPU {threads_cpu:.2f} ms"
            )
            print("target: p50 < 15 ms and p99 < 40 ms for both")
            await client.close()
        floor, floor_cpu = await measure_floor(dsn, big, args.requests)
        print(
            summary("floor: the same page's rows by hand SQL on asyncpg + orjson", floor)
            + f" CPU {floor_cpu:.2f} ms (this process)"
        )
        print(
            f"app/floor: p50 {percentile(page, 0.5) / percentile(floor, 0.5):.1f}x,"
            f" CPU per page {page_cpu / floor_cpu:.1f}x"
        )


if __name__ == "__main__":
    random.seed(1)
    asyncio.run(main())
