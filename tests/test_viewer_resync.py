"""viewerEventsWithResync: a client that fetches its thread list at each ViewerResync
misses no thread, whether the change came while its subscription was starting or
while Redis was down."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from typing import Any

import httpx
import pytest

from tests import factories
from tests.conftest import Api, Clients, Server, free_port, start_server, stop_server, token_for
from tests.test_broker import RedisServer
from tests.wsclient import GraphQLWS
from threadline.config import Settings
from threadline.models import User
from threadline.realtime.channels import thread_channel
from threadline.subscriptions.viewer import _Inbox, _ThreadWatch

RESYNC = """
subscription { viewerEventsWithResync {
  __typename
  ... on ViewerResync { reason }
  ... on ThreadActivityForViewer { thread { id lastMessage { body } } }
  ... on ThreadMembershipChanged { threadId role }
} }
"""
THREADS = "{ threads(first: 50) { edges { node { id } } } }"


async def event(ws: GraphQLWS, timeout: float = 10) -> dict[str, Any]:
    message = await ws.next(timeout)
    assert message["type"] == "next", message
    assert not message["payload"].get("errors"), message
    result: dict[str, Any] = message["payload"]["data"]["viewerEventsWithResync"]
    return result


async def test_a_thread_started_right_after_the_first_resync_is_delivered(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    await ws.subscribe(RESYNC)
    # No waiting for the server to listen: the resync says it does.
    assert await event(ws) == {"__typename": "ViewerResync", "reason": "STARTED"}
    tid = await factories.thread(alice, bob, title="Right away")
    got = await event(ws)
    assert (got["__typename"], got["threadId"], got["role"]) == (
        "ThreadMembershipChanged",
        tid,
        "MEMBER",
    )
    await ws.close()


@pytest.mark.redis_only
async def test_after_a_redis_restart_one_resync_comes_and_the_list_has_what_was_missed(
    settings: Settings,
) -> None:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(executable, free_port())
    redis.start()
    # One plain Redis of the test's own, on the cluster row too.
    server = await start_server(
        settings.model_copy(update={"redis_url": redis.url, "redis_cluster": False})
    )
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            alice, bob = Api(http, token_for("alice")), Api(http, token_for("bob"))
            alice.id = (await alice.gql("{ me { id } }"))["me"]["id"]
            bob.id = (await bob.gql("{ me { id } }"))["me"]["id"]
            # Bob is in one thread already: the stream then has two subscriptions
            # (his own channel and his threads'), each told of the reconnection.
            known = await factories.thread(alice, bob, title="Known")
            assert bob.token is not None
            ws = await GraphQLWS.connect(server.ws_url, bob.token)
            await ws.subscribe(RESYNC)
            assert (await event(ws))["reason"] == "STARTED"

            redis.kill()
            # Committed, but its publish is lost: Redis is down.
            missed = await factories.thread(alice, bob, title="Missed")
            redis.start()

            assert await event(ws, timeout=30) == {
                "__typename": "ViewerResync",
                "reason": "RECONNECTED",
            }
            listed = await bob.gql(THREADS)
            assert {e["node"]["id"] for e in listed["threads"]["edges"]} == {known, missed}
            # One resync for both subscriptions: the next event is the new message.
            await factories.send(alice, known, "back")
            got = await event(ws)
            assert got["__typename"] == "ThreadActivityForViewer", got
            assert got["thread"]["lastMessage"]["body"] == "back"
            await ws.close()
    finally:
        await stop_server(server)
        redis.kill()


async def test_a_stream_stopped_while_it_swaps_its_thread_watch_leaves_no_subscription(
    server: Server, clients: Clients
) -> None:
    # The stream swaps its watch on each membership change; a client that unsubscribes
    # (or drops) just then stops it while it lets the old subscription go.
    alice, bob = await clients.users("alice", "bob")
    first = await factories.thread(alice, bob, title="First")
    runtime = server.runtime
    async with runtime.db.reading() as session:
        viewer = await session.get(User, uuid.UUID(bob.id))
    watch = _ThreadWatch(runtime, _Inbox())
    await watch.follow(viewer)
    before = runtime.broker.health()["subscribers"]
    old_pump = watch._task
    assert old_pump is not None
    second = await factories.thread(alice, bob, title="Second")
    swap = asyncio.create_task(watch.follow(viewer))
    # Stopped the moment the old pump has ended: the swap still has the old
    # subscription to leave.
    old_pump.add_done_callback(lambda _: swap.cancel())
    await asyncio.wait([swap])
    assert swap.cancelled()
    await watch.stop()  # what the stream does on its way out
    assert runtime.broker.health()["subscribers"] == before - 1
    assert not runtime.broker.listeners(thread_channel(uuid.UUID(first)))
    assert not runtime.broker.listeners(thread_channel(uuid.UUID(second)))


async def test_what_the_old_thread_watch_heard_before_a_swap_is_not_lost(
    server: Server, clients: Clients
) -> None:
    # A membership change swaps the watch while messages keep coming: one delivered
    # to the old subscription but not yet handed on must still reach the stream.
    alice, bob = await clients.users("alice", "bob")
    busy = uuid.UUID(await factories.thread(alice, bob, title="Busy"))
    runtime = server.runtime
    async with runtime.db.reading() as session:
        viewer = await session.get(User, uuid.UUID(bob.id))
    inbox = _Inbox()
    watch = _ThreadWatch(runtime, inbox)
    await watch.follow(viewer)
    sent = [f"m{i}" for i in range(300)]

    async def publish() -> None:
        for message in sent:
            await runtime.broker.publish(thread_channel(busy), message)
            await asyncio.sleep(0)

    publisher = asyncio.create_task(publish())
    while not publisher.done():
        await watch.follow(viewer)
    await asyncio.sleep(0.1)
    heard = set()
    while not inbox.empty():
        heard.add(inbox.get_nowait())
    await watch.stop()
    assert [m for m in sent if m not in heard] == []
