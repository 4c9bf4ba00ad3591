"""The broker: live fan-out in memory and through a real Redis, bounded subscriber
queues, and surviving a Redis restart (reconnect marker, fast-failing publish)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from tests.conftest import CLUSTER, REDIS_CLUSTER_URL
from tests.redis_cluster import OwnCluster, master_of
from threadline.realtime.broker import (
    RECONNECTED,
    Broker,
    BrokerClosed,
    BrokerUnavailable,
    Reconnected,
    Subscriber,
    SubscriberOverflow,
)
from threadline.realtime.channels import (
    activity_channel,
    decode_activity,
    decode_logged,
    is_logged_event,
    publish_all,
)
from threadline.realtime.redis_pool import RedisTarget
from threadline.services.events import ActivityEvent, EventKind, LoggedEvent

REDIS_URL = "redis://127.0.0.1:6379/0"
# On the cluster row, "redis" is the shared Redis Cluster with sharded pub/sub.
REDIS: str | RedisTarget = RedisTarget(REDIS_CLUSTER_URL, cluster=True) if CLUSTER else REDIS_URL
# Long enough for a loaded machine, short enough that a bug fails instead of hanging.
RECEIVE = 2.0

MakeBroker = Callable[..., Broker]


@pytest.fixture(
    params=[
        pytest.param(None, id="memory"),
        pytest.param(REDIS, id="redis", marks=pytest.mark.redis_only),
    ]
)
async def make_broker(request: pytest.FixtureRequest) -> AsyncIterator[MakeBroker]:
    """Builds unconnected brokers on one backend; disconnects them after the test."""
    redis_url: str | RedisTarget | None = request.param
    made: list[Broker] = []

    def make(*, queue_limit: int = 1000) -> Broker:
        broker = Broker(redis_url, queue_limit=queue_limit)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.disconnect()


@pytest.fixture
def channel() -> Callable[[str], str]:
    """Channel names under a prefix of this test's own (the Redis is shared)."""
    prefix = f"test:broker:{uuid.uuid4().hex}"
    return lambda name: f"{prefix}:{name}"


async def receive(subscriber: Subscriber) -> str | Reconnected:
    return await asyncio.wait_for(anext(subscriber), RECEIVE)


async def receive_count(subscriber: Subscriber, count: int) -> list[str | Reconnected]:
    return [await receive(subscriber) for _ in range(count)]


async def redis_subscriber_count(name: str, url: str = REDIS_URL) -> int:
    if CLUSTER and url == REDIS_URL:
        # Sharded subscriptions are counted by the master that serves the channel.
        port = await master_of(REDIS_CLUSTER_URL, name)
        async with redis.asyncio.Redis(port=port) as node:
            [(_, count)] = await node.execute_command("PUBSUB SHARDNUMSUB", name)
            return int(count)
    async with redis.asyncio.Redis.from_url(url) as client:
        [(_, count)] = await client.pubsub_numsub(name)
        return int(count)


# -- fan-out -------------------------------------------------------------------


async def test_first_channel_subscribed_on_a_fresh_broker_receives_at_once(
    make_broker: MakeBroker, channel: Callable[[str], str]
) -> None:
    # broadcaster's own Redis backend loses this message: its listener parks
    # before the first SUBSCRIBE is registered.
    broker = make_broker()
    await broker.connect()
    async with broker.subscribe(channel("first")) as subscriber:
        await broker.publish(channel("first"), "hello")
        assert await receive(subscriber) == "hello"


async def test_every_subscriber_of_a_channel_receives_every_message_in_order(
    make_broker: MakeBroker, channel: Callable[[str], str]
) -> None:
    broker = make_broker()
    await broker.connect()
    async with contextlib.AsyncExitStack() as stack:
        subscribers = [
            await stack.enter_async_context(broker.subscribe(channel("busy"))) for _ in range(250)
        ]
        messages = [f'{{"seq": {seq}}}' for seq in range(5)]
        for message in messages:
            await broker.publish(channel("busy"), message)
        for subscriber in subscribers:
            assert await receive_count(subscriber, len(messages)) == messages
        assert broker.health()["subscribers"] == 250
        assert broker.health()["channels"] == 1


async def test_a_subscriber_gets_only_the_channels_it_subscribed_to(
    make_broker: MakeBroker, channel: Callable[[str], str]
) -> None:
    broker = make_broker()
    await broker.connect()
    async with (
        broker.subscribe_many([channel("a"), channel("b")]) as both,
        broker.subscribe(channel("b")) as only_b,
    ):
        await broker.publish(channel("a"), "to a")
        await broker.publish(channel("c"), "to c")
        await broker.publish(channel("b"), "to b")
        assert await receive_count(both, 2) == ["to a", "to b"]
        assert await receive(only_b) == "to b"
        assert only_b.pending == 0


async def test_a_subscriber_that_left_gets_nothing_more_and_the_others_carry_on(
    make_broker: MakeBroker, channel: Callable[[str], str]
) -> None:
    broker = make_broker()
    await broker.connect()
    async with broker.subscribe(channel("room")) as staying:
        async with broker.subscribe(channel("room")) as leaving:
            await broker.publish(channel("room"), "one")
            assert await receive(leaving) == "one"
        await broker.publish(channel("room"), "two")
        assert await receive_count(staying, 2) == ["one", "two"]
        with pytest.raises(StopAsyncIteration):
            await receive(leaving)
    assert broker.health()["channels"] == 0
    assert broker.health()["subscribers"] == 0


@pytest.mark.redis_only
async def test_redis_sees_one_subscription_per_channel_until_the_last_subscriber_leaves(
    channel: Callable[[str], str],
) -> None:
    broker = Broker(REDIS)
    await broker.connect()
    try:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                await stack.enter_async_context(broker.subscribe(channel("shared")))
            assert await redis_subscriber_count(channel("shared")) == 1
            async with broker.subscribe(channel("shared")):
                assert await redis_subscriber_count(channel("shared")) == 1
            assert await redis_subscriber_count(channel("shared")) == 1
        assert await redis_subscriber_count(channel("shared")) == 0
        # A channel left and joined again works as new.
        async with broker.subscribe(channel("shared")) as again:
            await broker.publish(channel("shared"), "back")
            assert await receive(again) == "back"
            assert await redis_subscriber_count(channel("shared")) == 1
    finally:
        await broker.disconnect()


@pytest.mark.redis_only
@pytest.mark.skipif(CLUSTER, reason="a Redis Cluster has database 0 only")
async def test_deployments_on_different_redis_databases_do_not_hear_each_other(
    channel: Callable[[str], str],
) -> None:
    # Pub/sub ignores database numbers; the backend puts each database's channels
    # under a name of its own, as two test runs (or staging beside production) need.
    base = REDIS_URL.rsplit("/", 1)[0]
    first, second = Broker(f"{base}/3"), Broker(f"{base}/4")
    await first.connect()
    await second.connect()
    try:
        async with (
            first.subscribe(channel("same")) as on_first,
            second.subscribe(channel("same")) as on_second,
        ):
            await first.publish(channel("same"), "for the first")
            assert await receive(on_first) == "for the first"
            # Redis delivers in the order it processes publishes: had the second heard
            # the first's message, it would come before this one.
            await second.publish(channel("same"), "for the second")
            assert await receive(on_second) == "for the second"
            assert on_first.pending == 0
            assert await redis_subscriber_count(f"db3:{channel('same')}") == 1
            assert await redis_subscriber_count(channel("same")) == 0
    finally:
        await first.disconnect()
        await second.disconnect()


# -- bounded queues ------------------------------------------------------------


async def test_a_slow_subscriber_overflows_while_a_fast_one_keeps_receiving(
    make_broker: MakeBroker, channel: Callable[[str], str]
) -> None:
    broker = make_broker(queue_limit=10)
    await broker.connect()
    received: list[str | Reconnected] = []
    got_one = asyncio.Event()

    async def read_fast(subscriber: Subscriber) -> None:
        async for message in subscriber:
            received.append(message)
            got_one.set()

    async with (
        broker.subscribe(channel("feed")) as slow,
        broker.subscribe(channel("feed")) as fast,
    ):
        reader = asyncio.create_task(read_fast(fast))
        started = time.monotonic()
        for seq in range(50):
            got_one.clear()
            await broker.publish(channel("feed"), str(seq))
            await asyncio.wait_for(got_one.wait(), RECEIVE)
        # The publisher never waited for the subscriber that does not read.
        assert time.monotonic() - started < 5
        assert received == [str(seq) for seq in range(50)]
        assert slow.pending == 0  # its backlog was dropped, not kept
        with pytest.raises(SubscriberOverflow, match="more than 10 messages behind"):
            await receive(slow)
        reader.cancel()


async def test_the_queue_limit_is_exact(
    make_broker: MakeBroker, channel: Callable[[str], str]
) -> None:
    broker = make_broker(queue_limit=3)
    await broker.connect()
    async with (
        broker.subscribe(channel("q")) as behind,
        broker.subscribe(channel("q")) as keeping_up,
    ):
        for seq in range(3):
            await broker.publish(channel("q"), str(seq))
            assert await receive(keeping_up) == str(seq)
        # Three behind is within the limit: everything is still there.
        assert behind.pending == 3
        await broker.publish(channel("q"), "3")
        assert await receive(keeping_up) == "3"
        with pytest.raises(SubscriberOverflow):
            await receive(behind)


# -- lifecycle -----------------------------------------------------------------


async def test_publish_and_subscribe_need_a_connected_broker(
    make_broker: MakeBroker, channel: Callable[[str], str]
) -> None:
    broker = make_broker()
    with pytest.raises(BrokerClosed):
        await broker.publish(channel("x"), "early")
    with pytest.raises(BrokerClosed):
        async with broker.subscribe(channel("x")):
            pass
    assert not broker.is_healthy
    await broker.connect()
    assert broker.is_healthy
    await broker.disconnect()
    assert not broker.is_healthy
    with pytest.raises(BrokerClosed):
        await broker.publish(channel("x"), "late")


async def test_a_subscribe_block_is_entered_once(
    make_broker: MakeBroker, channel: Callable[[str], str]
) -> None:
    """Evidence: the block, a class since it stopped being a generator, took a second
    entry while the first was open; the second subscriber replaced the first, whose
    leaving was then never done (health counted it, Redis kept the channel)."""
    broker = make_broker()
    await broker.connect()
    block = broker.subscribe(channel("x"))
    async with block:
        with pytest.raises(RuntimeError, match="entered once"):
            async with block:
                pass
    with pytest.raises(RuntimeError, match="entered once"):
        async with block:
            pass
    assert broker.health()["subscribers"] == broker.health()["channels"] == 0
    if broker.health()["backend"] != "memory":
        assert await redis_subscriber_count(channel("x")) == 0


async def test_disconnecting_the_broker_ends_live_subscribers_with_broker_closed(
    make_broker: MakeBroker, channel: Callable[[str], str]
) -> None:
    broker = make_broker()
    await broker.connect()
    async with broker.subscribe(channel("x")) as subscriber:
        waiting = asyncio.create_task(receive(subscriber))
        await asyncio.sleep(0.01)
        await broker.disconnect()
        with pytest.raises(BrokerClosed):
            await waiting


async def test_health_describes_the_backend(make_broker: MakeBroker) -> None:
    broker = make_broker()
    await broker.connect()
    health = broker.health()
    assert health["backend"] in {"memory", "redis", "redis-cluster"}
    assert health["connected"] is True
    assert health["reconnects"] == 0
    assert health["last_error"] is None


# -- Redis outages -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server of this test's own, to kill and restart on one port."""

    def __init__(self, executable: str, port: int) -> None:
        self.executable = executable
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.executable,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(executable, free_port())
    server.start()
    yield server
    server.kill()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Polls: health is a snapshot, with nothing to await."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {timeout} s")


def reconnects_counted() -> float:
    return REGISTRY.get_sample_value("threadline_broker_reconnects_total") or 0.0


@pytest.mark.redis_only
async def test_after_a_redis_restart_subscribers_get_the_marker_then_new_messages(
    own_redis: RedisServer, channel: Callable[[str], str]
) -> None:
    broker = Broker(own_redis.url)
    await broker.connect()
    counted_before = reconnects_counted()
    try:
        async with (
            broker.subscribe_many([channel("a"), channel("b")]) as both,
            broker.subscribe(channel("a")) as only_a,
        ):
            await broker.publish(channel("a"), "before")
            assert await receive(both) == "before"
            assert await receive(only_a) == "before"

            own_redis.kill()
            await wait_until(lambda: not broker.health()["connected"])
            assert not broker.is_healthy
            assert broker.health()["last_error"]
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                await broker.publish(channel("a"), "lost")
            # The publish timeout is 1 s; the margin is for a loaded 2-core machine.
            assert time.monotonic() - started < 3

            own_redis.start()
            # Backoff is capped at 2 s, so the broker is back within about that.
            assert await asyncio.wait_for(anext(both), 5) is RECONNECTED
            assert await receive(only_a) is RECONNECTED
            health = broker.health()
            assert health["connected"] is True
            assert health["reconnects"] == 1
            assert reconnects_counted() == counted_before + 1

            await broker.publish(channel("b"), "after b")
            await broker.publish(channel("a"), "after a")
            # One marker per subscriber, however many channels it has.
            assert await receive_count(both, 2) == ["after b", "after a"]
            assert await receive(only_a) == "after a"
            assert await redis_subscriber_count(channel("a"), own_redis.url) == 1
    finally:
        await broker.disconnect()


@pytest.mark.redis_only
async def test_a_channel_subscribed_while_redis_is_down_is_subscribed_when_it_is_back(
    own_redis: RedisServer, channel: Callable[[str], str]
) -> None:
    broker = Broker(own_redis.url)
    await broker.connect()
    try:
        own_redis.kill()
        await wait_until(lambda: not broker.is_healthy)
        async with broker.subscribe(channel("late")) as subscriber:
            own_redis.start()
            assert await asyncio.wait_for(anext(subscriber), 5) is RECONNECTED
            await broker.publish(channel("late"), "hello")
            assert await receive(subscriber) == "hello"
    finally:
        await broker.disconnect()


@pytest.mark.redis_only
async def test_with_redis_unreachable_connect_returns_and_publish_fails_fast() -> None:
    broker = Broker(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    await broker.connect()
    try:
        assert time.monotonic() - started < 5
        health = broker.health()
        assert health["connected"] is False
        assert "ConnectionError" in str(health["last_error"])
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="Redis unreachable"):
            await broker.publish("anything", "message")
        assert time.monotonic() - started < 3  # the 1 s publish timeout, with a margin
    finally:
        await broker.disconnect()


# -- Redis Cluster -------------------------------------------------------------


@pytest.mark.skipif(not CLUSTER, reason="runs on the cluster row (a cluster of its own)")
async def test_a_channel_whose_slot_moves_to_another_master_follows_it(
    tmp_path: Path, channel: Callable[[str], str]
) -> None:
    cluster = OwnCluster(tmp_path / "cluster")
    await cluster.start()
    broker = Broker(RedisTarget(cluster.url, cluster=True))
    await broker.connect()
    try:
        async with broker.subscribe(channel("moving")) as subscriber:
            await broker.publish(channel("moving"), "before")
            assert await receive(subscriber) == "before"
            target = await cluster.move_slot_of(channel("moving"))
            # Redis unsubscribes the channel on its old master; the broker finds the
            # new one, subscribes there, and tells the subscriber to fill the gap.
            assert await receive(subscriber) is RECONNECTED
            await broker.publish(channel("moving"), "after")
            assert await receive(subscriber) == "after"
            async with redis.asyncio.Redis(port=target) as node:
                [(_, count)] = await node.execute_command("PUBSUB SHARDNUMSUB", channel("moving"))
            assert count == 1
            assert broker.health()["shards"] == 3
    finally:
        await broker.disconnect()
        await cluster.stop()


@pytest.mark.skipif(not CLUSTER, reason="runs on the cluster row (a cluster of its own)")
async def test_a_channel_subscribed_before_the_cluster_is_up_is_subscribed_when_it_is(
    tmp_path: Path, channel: Callable[[str], str]
) -> None:
    cluster = OwnCluster(tmp_path / "cluster")  # its ports are chosen, nothing runs there yet
    broker = Broker(RedisTarget(cluster.url, cluster=True))
    await broker.connect()
    try:
        assert broker.health()["connected"] is False
        assert "no slot map" in str(broker.health()["last_error"])
        async with broker.subscribe(channel("early")) as subscriber:
            await cluster.start()
            assert await asyncio.wait_for(anext(subscriber), 15) is RECONNECTED
            await broker.publish(channel("early"), "hello")
            # A cluster still forming may move the channel once more: another marker.
            while (item := await receive(subscriber)) is RECONNECTED:
                pass
            assert item == "hello"
            assert broker.health()["connected"] is True
    finally:
        await broker.disconnect()
        await cluster.stop()


@pytest.mark.skipif(not CLUSTER, reason="runs on the cluster row (a cluster of its own)")
async def test_a_subscription_answered_moved_is_made_on_the_slots_new_master(
    tmp_path: Path, channel: Callable[[str], str]
) -> None:
    cluster = OwnCluster(tmp_path / "cluster")
    await cluster.start()
    broker = Broker(RedisTarget(cluster.url, cluster=True))
    await broker.connect()
    try:
        # The slot moves while nobody here listens on it: the broker's map is stale.
        target = await cluster.move_slot_of(channel("late"))
        async with broker.subscribe(channel("late")) as subscriber:
            # The old master answered MOVED; the broker read the map again and
            # subscribed on the new master, telling the subscriber to fill the gap.
            assert await receive(subscriber) is RECONNECTED
            await broker.publish(channel("late"), "found")
            assert await receive(subscriber) == "found"
            async with redis.asyncio.Redis(port=target) as node:
                [(_, count)] = await node.execute_command("PUBSUB SHARDNUMSUB", channel("late"))
            assert count == 1
    finally:
        await broker.disconnect()
        await cluster.stop()


# -- what goes on which channel -------------------------------------------------


async def test_a_removal_reaches_the_activity_channel_too_before_later_typing(
    make_broker: MakeBroker,
) -> None:
    """threadActivity reads typing from the thread's activity channel and removals from
    its event channel; on a Redis Cluster the two can be on different shards, read over
    different connections, so typing published after a removal could come first. A
    removal is published on the activity channel too; other logged events are not."""
    broker = make_broker()
    await broker.connect()
    thread, removed, typist = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    def logged(seq: int, kind: EventKind, payload: dict[str, object]) -> LoggedEvent:
        return LoggedEvent(thread, seq, kind, payload, typist, now)

    removal = logged(7, EventKind.PARTICIPANT_CHANGED, {"user_id": str(removed), "role": None})
    renamed = logged(8, EventKind.THREAD_UPDATED, {"title": "t"})
    typing = ActivityEvent(thread, "typing", typist, {"is_typing": True})
    async with broker.subscribe(activity_channel(thread)) as subscriber:
        await publish_all(broker, [removal, renamed, typing])
        first, second = await receive_count(subscriber, 2)
    assert isinstance(first, str) and is_logged_event(first)
    assert decode_logged(first) == removal
    assert isinstance(second, str) and decode_activity(second) == typing


def test_streams_still_subscribed_when_the_loop_shuts_down_close_without_an_error() -> None:
    # shutdown_asyncgens closes every open generator at once, in no set order: a
    # subscription block that was itself a generator could close before the stream
    # holding it, and the stream's close then failed. Twenty streams make the order
    # that failed near certain.
    errors: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: errors.append(context["message"])
        )
        broker = Broker(None)
        await broker.connect()

        async def stream(n: int) -> AsyncIterator[Subscriber]:
            async with broker.subscribe_many([f"a{n}", f"b{n}"]) as subscriber:
                yield subscriber

        for n in range(20):
            left_open.append(stream(n))
            await anext(left_open[-1])
        left.append(broker)

    left_open: list[AsyncIterator[Subscriber]] = []
    left: list[Broker] = []
    asyncio.run(main())
    assert errors == []
    assert left[0].health()["subscribers"] == 0
