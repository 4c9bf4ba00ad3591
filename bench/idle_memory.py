"""Memory of idle subscribers: server RSS before and after N WebSocket connections,
each with one threadEvents subscription (graphql-transport-ws).

usage: .venv/bin/python bench/idle_memory.py [--connections 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httpx
import websockets

from bench.harness import cores_line, database, gql, server, token

SUB = "subscription($t: ID!) { threadEvents(threadId: $t) { seq } }"


async def open_one(url: str, tok: str, thread_id: str) -> websockets.ClientConnection:
    conn = await websockets.connect(url, subprotocols=["graphql-transport-ws"], compression=None)  # type: ignore[list-item]
    await conn.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {tok}"}})
    )
    ack = json.loads(await conn.recv())
    assert ack["type"] == "connection_ack", ack
    await conn.send(
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": SUB, "variables": {"t": thread_id}},
            }
        )
    )
    return conn


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()
    print(cores_line())
    async with (
        database() as (_, url),
        server(url) as srv,
        httpx.AsyncClient(base_url=srv.base, timeout=60) as http,
    ):
        toks = [token(f"idle{i}") for i in range(args.users)]
        ids = [(await gql(http, t, "{ me { id } }"))["me"]["id"] for t in toks]
        data = await gql(
            http,
            toks[0],
            "mutation($i: CreateThreadInput!) { createThread(input: $i) { id } }",
            {"i": {"title": "idle", "participantIds": ids[1:]}},
        )
        thread_id = data["createThread"]["id"]
        await asyncio.sleep(1)
        before = srv.rss_kib()
        conns = []
        for start in range(0, args.connections, 50):
            batch = [
                open_one(srv.ws_url, toks[(start + k) % len(toks)], thread_id)
                for k in range(min(50, args.connections - start))
            ]
            conns += await asyncio.gather(*batch)
        await asyncio.sleep(3)
        after = srv.rss_kib()
        per = (after - before) * 1024 / args.connections / 1000
        print(
            f"server RSS before {before / 1024:.1f} MiB, "
            f"after {args.connections} idle subscriptions "
            f"{after / 1024:.1f} MiB: {per:.1f} KB per connection (target <= 40 KB)"
        )
        await gql(
            http,
            toks[0],
            "mutation($i: SendMessageInput!) { sendMessage(input: $i) { seq } }",
            {"i": {"threadId": thread_id, "body": "still alive?"}},
        )
        got = sum(1 for c in conns[:20] if c.state.name == "OPEN")
        print(f"{got}/20 sampled connections still open")
        await asyncio.gather(*(c.close() for c in conns))


if __name__ == "__main__":
    asyncio.run(main())
