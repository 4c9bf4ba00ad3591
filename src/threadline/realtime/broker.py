"""The app's one pub/sub object: a backend (Redis, or in-memory) and bounded fan-out.

Subscribers get bounded queues, ``SubscriberOverflow`` when they fall behind,
``RECONNECTED`` when Redis is back (catch up from the event log) and
``BrokerClosed`` at shutdown. Not ``broadcaster``: its unbounded queues, missing
reconnect signal and unconfirmed second subscribers would need its private
listener to fix. Messages are opaque strings: nothing is parsed here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, final

from threadline.realtime.redis_backend import BrokerError as BrokerError
from threadline.realtime.redis_backend import BrokerUnavailable as BrokerUnavailable
from threadline.realtime.redis_backend import ConnectionRestored, Published, RedisBackend
from threadline.realtime.redis_cluster import ClusterBackend
from threadline.realtime.redis_pool import RedisTarget, as_target

logger = logging.getLogger(__name__)


class SubscriberOverflow(BrokerError):
    """The subscriber fell more than ``queue_limit`` messages behind and was
    dropped; it should resume from the event log (``afterSeq``)."""


class BrokerClosed(BrokerError):
    """The broker is not connected: not yet, or no longer (shutting down)."""


@final
class Reconnected:
    """Yielded after Redis came back: what was published meanwhile is lost to
    pub/sub, so the subscriber refetches it from the event log. One instance."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "RECONNECTED"


RECONNECTED: Final = Reconnected()


@final
class Subscriber:
    """What ``Broker.subscribe`` yields: iterate it for messages (published
    strings) and ``RECONNECTED`` markers. One task iterates a subscriber.

    Iteration raises ``SubscriberOverflow`` once the subscriber is more than the
    broker's ``queue_limit`` behind, ``BrokerClosed`` when the broker
    disconnects, and stops when the ``subscribe`` block is left.
    """

    __slots__ = ("_buffer", "_end", "_limit", "_waiter", "_why", "channels")

    def __init__(self, channels: tuple[str, ...], limit: int) -> None:
        self.channels = channels
        self._limit = limit
        self._buffer: deque[str | Reconnected] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # What iteration raises once the subscription ended, and its message.
        self._end: type[BaseException] | None = None
        self._why = ""

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def take_pending(self) -> list[str | Reconnected]:
        """What was delivered and not read yet, taken without waiting (nothing once
        iteration would raise or stop)."""
        if self._end is not None:
            return []
        items = list(self._buffer)
        self._buffer.clear()
        return items

    def __aiter__(self) -> AsyncIterator[str | Reconnected]:
        return self

    async def __anext__(self) -> str | Reconnected:
        while True:
            if self._end is not None:
                raise self._end(self._why)
            if self._buffer:
                return self._buffer.popleft()
            if self._waiter is not None:
                raise RuntimeError("a Subscriber is iterated by one task at a time")
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def _push(self, item: str | Reconnected) -> None:
        # The fan-out hot path: called once per subscriber per message, never awaits.
        if self._end is not None:
            return
        if len(self._buffer) >= self._limit:
            self._buffer.clear()  # the subscriber refetches; drop the memory now
            self._finish(
                SubscriberOverflow,
                f"subscriber of {', '.join(self.channels)} fell more than "
                f"{self._limit} messages behind",
            )
            return
        self._buffer.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self, end: type[BaseException], why: str = "") -> None:
        if self._end is None:
            self._end, self._why = end, why
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


class _Channel:
    """The local subscribers of one channel, and whether the backend has
    confirmed the subscription (later joiners wait for the first one's)."""

    __slots__ = ("ready", "subscribers")

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.ready = asyncio.Event()


class MemoryBackend:
    """One process: a publish is queued and handed on by the listener, as Redis would."""

    def __init__(self) -> None:
        self._published: asyncio.Queue[Published] = asyncio.Queue()

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def subscribe(self, channel: str) -> None:
        pass  # the broker drops messages of channels nobody here listens to

    async def unsubscribe(self, channel: str) -> None:
        pass

    async def publish(self, channel: str, message: str) -> None:
        self._published.put_nowait(Published(channel, message))

    async def next_published(self) -> Published:
        return await self._published.get()

    def health(self) -> dict[str, Any]:
        return {"backend": "memory", "connected": True, "reconnects": 0, "last_error": None}


@final
class _Subscription(AbstractAsyncContextManager[Subscriber]):
    """``subscribe_many``'s block. A class, not an ``@asynccontextmanager`` generator: a
    stream still open when the loop shuts down is closed by ``shutdown_asyncgens`` along
    with every other generator, in no set order, and a generator block closed before the
    stream holding it made the stream's close fail ("generator didn't stop after athrow()")."""

    __slots__ = ("_broker", "_names", "_subscriber")

    def __init__(self, broker: Broker, names: tuple[str, ...]) -> None:
        self._broker = broker
        self._names = names
        self._subscriber: Subscriber | None = None

    async def __aenter__(self) -> Subscriber:
        # Once, as the generator was: a second entry would replace the first subscriber,
        # which would then never leave.
        names, self._names = self._names, ()
        if not names:
            raise RuntimeError("a subscribe block is entered once")
        self._subscriber = await self._broker._enter(names)
        return self._subscriber

    async def __aexit__(self, *exc_info: object) -> None:
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            await self._broker._exit(subscriber)


class Broker:
    """Publish strings to channels and subscribe to them, in one process (no
    ``redis_url``) or across processes through Redis.

    ``subscribe`` returns once the subscription is live: a message published
    after that reaches the subscriber, unless Redis is down (then the subscriber
    gets ``RECONNECTED`` when it is back). ``publish`` never waits for
    subscribers; it raises ``BrokerUnavailable`` quickly when Redis is down.
    """

    def __init__(self, redis: str | RedisTarget | None, *, queue_limit: int = 1000) -> None:
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        target = as_target(redis)
        self._backend: MemoryBackend | RedisBackend = MemoryBackend()
        if target is not None:
            self._backend = (ClusterBackend if target.cluster else RedisBackend)(target)
        self._listener: asyncio.Task[None] | None = None
        self._queue_limit = queue_limit
        self._channels: dict[str, _Channel] = {}
        self._subscribers: set[Subscriber] = set()
        self._state = "new"

    @property
    def queue_limit(self) -> int:
        """How far behind a subscriber may fall before it is dropped."""
        return self._queue_limit

    async def connect(self) -> None:
        """Connect the backend and start delivering. With Redis unreachable this
        returns after a short wait; ``health()`` then says so and the backend
        keeps reconnecting."""
        if self._state == "connected":
            return
        if self._state == "closed":
            raise BrokerClosed("a disconnected broker cannot be reused")
        await self._backend.connect()
        self._listener = asyncio.create_task(self._listen(), name="threadline-broker-listener")
        self._state = "connected"

    async def disconnect(self) -> None:
        """Stop: every live subscriber's iteration raises ``BrokerClosed``."""
        state, self._state = self._state, "closed"
        if state != "connected":
            return
        for subscriber in self._subscribers:
            subscriber._finish(BrokerClosed, "the broker disconnected")
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                logger.error("broker listener had crashed", exc_info=task.exception())
        await self._backend.disconnect()

    async def _listen(self) -> None:
        # Every backend message goes to the bounded fan-out, which never awaits.
        next_published, deliver = self._backend.next_published, self._deliver
        while True:
            deliver(await next_published())

    async def publish(self, channel: str, message: str) -> None:
        if self._state != "connected":
            raise BrokerClosed("the broker is not connected")
        await self._backend.publish(channel, message)

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Subscriber]:
        return self.subscribe_many((channel,))

    def subscribe_many(self, channels: Iterable[str]) -> AbstractAsyncContextManager[Subscriber]:
        """One subscriber for several channels: it gets messages from all of
        them, interleaved in arrival order, and one ``RECONNECTED`` marker per
        reconnection."""
        names = tuple(dict.fromkeys(channels))
        if not names:
            raise ValueError("subscribe to at least one channel")
        return _Subscription(self, names)

    async def _enter(self, names: tuple[str, ...]) -> Subscriber:
        if self._state != "connected":
            raise BrokerClosed("the broker is not connected")
        subscriber = Subscriber(names, self._queue_limit)
        self._subscribers.add(subscriber)
        try:
            for name in names:
                await self._join(name, subscriber)
        except BaseException:
            await self._exit(subscriber)
            raise
        return subscriber

    async def _join(self, name: str, subscriber: Subscriber) -> None:
        channel = self._channels.get(name)
        if channel is not None:
            channel.subscribers.add(subscriber)
            await channel.ready.wait()
            return
        channel = self._channels[name] = _Channel()
        channel.subscribers.add(subscriber)
        try:
            await self._backend.subscribe(name)
        finally:
            channel.ready.set()

    async def _exit(self, subscriber: Subscriber) -> None:
        subscriber._finish(StopAsyncIteration)
        self._subscribers.discard(subscriber)
        for name in subscriber.channels:
            channel = self._channels.get(name)
            if channel is not None:
                channel.subscribers.discard(subscriber)
        if self._state != "connected":
            return
        cancelled = False
        for name in subscriber.channels:
            channel = self._channels.get(name)
            if channel is None or channel.subscribers:
                continue
            # Forgetting the channel and (inside the backend call, before its first
            # await) sending UNSUBSCRIBE happen in one step: a new subscriber of the
            # same name after this point sends its SUBSCRIBE after our UNSUBSCRIBE.
            del self._channels[name]
            try:
                await self._backend.unsubscribe(name)
            except asyncio.CancelledError:
                # Finish releasing the other channels, then let the cancellation on.
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    def _deliver(self, event: Published) -> None:
        if type(event) is ConnectionRestored:
            # The subscribers of the channels the reconnection restored (None: all).
            restored = self._subscribers
            if event.channels is not None:
                found = [self._channels.get(name) for name in event.channels]
                restored = set().union(*(c.subscribers for c in found if c is not None))
            for subscriber in restored:
                subscriber._push(RECONNECTED)
            return
        channel = self._channels.get(event.channel)
        if channel is None:
            return
        message = event.message
        for subscriber in channel.subscribers:
            subscriber._push(message)

    def listeners(self, channel: str) -> frozenset[Subscriber]:
        """The local subscribers of ``channel`` whose backend subscription is
        confirmed: a message published from now on reaches them."""
        state = self._channels.get(channel)
        if state is None or not state.ready.is_set():
            return frozenset()
        return frozenset(state.subscribers)

    def health(self) -> dict[str, Any]:
        """For ``/readyz``: backend, connected, reconnects, last_error, and the
        local channel and subscriber counts."""
        report = self._backend.health()
        # A listener that stopped leaves the broker deaf.
        task, failure = self._listener, None
        if task is not None and task.done():
            failure = (
                "listener cancelled"
                if task.cancelled()
                else f"listener crashed: {task.exception()!r}"
            )
            report["last_error"] = failure
        report["connected"] = (
            bool(report["connected"]) and self._state == "connected" and failure is None
        )
        report["channels"] = len(self._channels)
        report["subscribers"] = len(self._subscribers)
        return report

    @property
    def is_healthy(self) -> bool:
        return bool(self.health()["connected"])
