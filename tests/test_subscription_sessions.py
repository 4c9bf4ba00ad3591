"""Subscriptions hold no pooled database connection while they wait for their next event."""

from __future__ import annotations

import asyncio
from typing import Any

from tests import factories
from tests.conftest import Clients, Server
from tests.live import new_listener
from tests.wsclient import GraphQLWS
from threadline.realtime.channels import thread_channel

# More than one process's pool holds (PostgreSQL 20 + 10 overflow, SQLite 8 + 8).
SUBSCRIBERS = 40
VIEWER = """
subscription { viewerEvents {
  ... on ThreadActivityForViewer { thread { id unreadCount lastMessage { body } } }
} }
"""


async def activity(ws: GraphQLWS) -> Any:
    message = await ws.next(15)
    assert message["type"] == "next", message
    assert not message["payload"].get("errors"), message
    return message["payload"]["data"]["viewerEvents"]["thread"]


async def test_viewer_subscribers_that_saw_an_event_leave_the_pool_free(
    server: Server, clients: Clients
) -> None:
    owner = await clients.user("owner")
    members = [await clients.user(f"member{i}") for i in range(SUBSCRIBERS)]
    tid = await factories.thread(owner, *members)
    sockets: list[GraphQLWS] = []
    try:
        for member in members:
            ready = new_listener(server, thread_channel(tid))
            ws = await GraphQLWS.connect(server.ws_url, member.token)
            sockets.append(ws)
            await ws.subscribe(VIEWER)
            await ws.until(ready)
        # Each event's fields read the database; an idle subscriber that kept its
        # session would hold a connection, and the pool runs out before the 40th.
        for body in ("one", "two"):
            await factories.send(owner, tid, body)
            seen = await asyncio.gather(*(activity(ws) for ws in sockets))
            assert [t["lastMessage"]["body"] for t in seen] == [body] * SUBSCRIBERS
        page = await asyncio.wait_for(
            owner.gql("{ threads(first: 1) { edges { node { id } } } }"), 10
        )
        assert page["threads"]["edges"] == [{"node": {"id": tid}}]
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
