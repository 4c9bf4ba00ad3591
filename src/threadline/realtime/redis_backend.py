"""The Redis side of live fan-out for ``broker.Broker``: one resilient SUBSCRIBE
connection per process (per shard on a Redis Cluster: ``redis_cluster``), a
publishing client with bounded timeouts, and the health that ``/readyz`` reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from threadline.metrics import BROKER_RECONNECTS
from threadline.realtime.redis_pool import REDIS_ERRORS, RedisTarget, close_client, command_client

logger = logging.getLogger(__name__)

# Messages the reader hands on before it yields: one socket read can hold thousands,
# and subscribers must drain their queues before the next batch lands on them.
_READ_BATCH: Final = 64
CONNECT_TIMEOUT: Final = 1.0
PUBLISH_TIMEOUT: Final = 1.0
SUBSCRIBE_TIMEOUT: Final = 2.0
PING_INTERVAL: Final = 5.0
BACKOFF_INITIAL: Final = 0.1
BACKOFF_MAX: Final = 2.0
# Bounded so that a stalled event loop pushes back on the socket (Redis then
# buffers, and drops us past its limit) instead of on our memory.
MAX_PENDING: Final = 10_000


class BrokerError(Exception):
    """Base of the broker's own errors, so a caller can catch them all at once."""


class BrokerUnavailable(BrokerError):
    """Redis did not take a publish. The message is lost to pub/sub only: the
    event log in the database still has it, and subscribers fill gaps from there."""


@dataclass(slots=True, eq=False)
class Published:
    """One message heard on a channel, as a backend hands it to the broker."""

    channel: str = ""
    message: str = ""


@dataclass(slots=True, eq=False)
class ConnectionRestored(Published):
    """A backend signal, not a message: a subscriber connection is back, and what
    was published on ``channels`` (None: every channel) meanwhile is lost to pub/sub."""

    channels: frozenset[str] | None = None


class RedisBackend:
    """Redis pub/sub with no first-subscribe race, automatic reconnection and
    bounded timeouts. ``subscribe`` returns once Redis has acknowledged the
    SUBSCRIBE (or at once while disconnected: the next connection subscribes the
    channel and sends ``ConnectionRestored``, which tells subscribers to catch up).
    """

    # The publish command and whether subscriptions are sharded (SSUBSCRIBE).
    publish_command: str = "PUBLISH"
    sharded: bool = False

    def __init__(self, target: RedisTarget) -> None:
        self._target = target
        # Pub/sub ignores database numbers: channels of database N > 0 get a "dbN:"
        # prefix, so that deployments (or test runs) sharing a server keep apart.
        database = int(parse_url(target.url).get("db") or 0)
        self._namespace = target.prefix + (f"db{database}:" if database else "")
        self._events: asyncio.Queue[Published] = asyncio.Queue(maxsize=MAX_PENDING)
        self._started = False
        # The subscriber connections: one, keyed None; a cluster's, by master address.
        self._shards: dict[Any, SubscriberConnection] = {}
        self._publisher: Redis[bytes] | None = None
        self._outbox: list[tuple[str, Any, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Set when a shard reports trouble: a cluster then reads its slot map again.
        self._stale = asyncio.Event()

    async def connect(self) -> None:
        """Start the connection loop(s) and wait briefly for the first connection.
        With Redis unreachable the process keeps serving and the loop keeps trying."""
        if self._started:
            return
        self._started = True
        self._publisher = command_client(
            self._target,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=PUBLISH_TIMEOUT,
            # redis-py retries with backoff of its own by default; a publish must
            # fail fast instead, so the caller can log it and move on.
            retry=Retry(NoBackoff(), 0),
        )
        await self._start_subscribers()
        links = list(self._shards.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * CONNECT_TIMEOUT):
                for link in links:
                    await link.first_attempt.wait()
        if not links or not all(link.ready.is_set() for link in links):
            logger.warning(
                "Redis is not reachable yet (%s); retrying in the background",
                self.health()["last_error"],
            )

    async def _start_subscribers(self) -> None:
        self._shards[None] = self._new_link(self._target.url)

    def _new_link(self, url: str) -> SubscriberConnection:
        link = SubscriberConnection(
            url, self._events, self._namespace, sharded=self.sharded, on_trouble=self._stale.set
        )
        link.start()
        return link

    async def disconnect(self) -> None:
        self._started = False
        await self._stop_subscribers()
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await close_client(publisher)

    async def _stop_subscribers(self) -> None:
        shards, self._shards = self._shards, {}
        for link in shards.values():
            await link.stop()

    def health(self) -> dict[str, Any]:
        links = self._shards.values()
        errors = [link.last_error for link in links if link.last_error]
        return {
            "backend": "redis",
            "connected": bool(links) and all(link.ready.is_set() for link in links),
            "reconnects": sum(link.reconnects for link in links),
            "last_error": errors[0] if errors else None,
        }

    async def subscribe(self, channel: str) -> None:
        if (link := self._shards.get(None)) is not None:
            await link.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        if (link := self._shards.get(None)) is not None:
            await link.unsubscribe(channel)

    async def publish(self, channel: str, message: str) -> None:
        """Publish once Redis has taken the message. Publishes made while a batch
        is on its way go out together in the next pipeline (one batch at a time,
        so order is kept): under load a round trip carries many of them."""
        if self._publisher is None:
            raise BrokerUnavailable("the Redis backend is not connected")
        taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((channel, message, taken))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="threadline-redis-publish")
        try:
            # A timeout cancels `taken`; the flusher then skips its answer.
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await taken
        except TimeoutError:
            raise BrokerUnavailable(
                f"cannot publish to {channel!r}: Redis did not answer in time"
            ) from None

    async def _flush(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                await self._publish_batch(batch)
        finally:
            self._flusher = None

    async def _publish_batch(self, batch: list[tuple[str, Any, asyncio.Future[None]]]) -> None:
        publisher = self._publisher
        failure: BrokerUnavailable | None = None
        try:
            if publisher is None:
                raise BrokerUnavailable("the Redis backend is not connected")
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                pipe = publisher.pipeline(transaction=False)
                namespace, command = self._namespace, self.publish_command
                for channel, message, _ in batch:
                    pipe.execute_command(command, namespace + channel, message)
                await pipe.execute()
        except BrokerUnavailable as exc:
            failure = exc
        except REDIS_ERRORS as exc:
            failure = BrokerUnavailable(f"cannot publish: Redis unreachable ({_describe(exc)})")
        except Exception as exc:  # an odd state of the cluster client: lost to pub/sub only
            failure = BrokerUnavailable(f"cannot publish: {_describe(exc)}")
        for _, _, taken in batch:
            if taken.done():
                continue
            if failure is None:
                taken.set_result(None)
            else:
                taken.set_exception(failure)

    async def next_published(self) -> Published:
        return await self._events.get()


class SubscriberConnection:
    """One subscriber connection to one Redis server (or cluster shard), kept up
    forever with capped backoff, re-subscribed after a reconnection (then
    ``ConnectionRestored`` goes into the events queue).

    ``sharded``: SSUBSCRIBE, one channel per command (a cluster refuses several
    slots in one). ``on_trouble`` is told when the shard no longer serves a channel
    or the connection failed (a failover may have moved its slots).
    """

    def __init__(
        self,
        url: str,
        events: asyncio.Queue[Published],
        namespace: str,
        *,
        sharded: bool,
        on_trouble: Callable[[], None],
    ) -> None:
        self.url = url
        self.channels: set[str] = set()
        self.ready = asyncio.Event()
        self.first_attempt = asyncio.Event()
        self.reconnects = 0
        self.last_error: str | None = None
        self._events = events
        self._namespace = namespace
        self._namespace_bytes = len(namespace.encode())
        self._sharded = sharded
        self._on_trouble = on_trouble
        # Sharded pub/sub's commands and message kind are the plain ones with an S.
        s = "S" if sharded else ""
        self._subscribe, self._unsubscribe = f"{s}SUBSCRIBE", f"{s}UNSUBSCRIBE"
        self._kind = f"{s}message".lower().encode()
        self._barriers: dict[bytes, asyncio.Future[None]] = {}
        self._tokens = itertools.count(1)
        self._connection: AbstractConnection | None = None
        self._ready_token = b""
        self._announce: ConnectionRestored | None = None
        self._ever_ready = False
        self._outage_logged = False
        self._pong_pending = False
        self._saw_data = False
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="threadline-redis-subscriber")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            # asyncio.wait, unlike awaiting the task, does not re-raise its
            # cancellation here, so our own caller's cancellation stays distinct.
            await asyncio.wait([runner])

    def _commands(self, command: str, channels: Iterable[str]) -> list[tuple[str | bytes, ...]]:
        names = [self._namespace + c for c in channels]
        if self._sharded:
            return [(command, name) for name in names]
        return [(command, *names)] if names else []

    async def subscribe(self, *channels: str) -> None:
        self.channels.update(channels)
        connection = self._connection
        if connection is None:
            return
        # A PING after the SUBSCRIBE: its answer proves Redis processed the
        # SUBSCRIBE, so a publish made after we return reaches this process.
        token, answered = self._new_barrier()
        try:
            await self._send(
                connection, [*self._commands(self._subscribe, channels), ("PING", token)]
            )
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await answered
        except (RedisError, OSError) as exc:
            # The reader sees the same failure and reconnects; the reconnection
            # subscribes this channel and tells its subscribers to catch up.
            logger.warning("SUBSCRIBE %s not confirmed: %s", channels, _describe(exc))
        finally:
            self._barriers.pop(token, None)

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        connection = self._connection
        if connection is None:
            return
        try:
            await self._send(connection, self._commands(self._unsubscribe, (channel,)))
        except (RedisError, OSError) as exc:
            # A broken connection has dropped every subscription anyway, and the
            # next one subscribes only the channels still wanted.
            logger.debug("UNSUBSCRIBE %s not sent: %s", channel, _describe(exc))

    async def _run(self) -> None:
        """Keep one subscriber connection up, forever, with capped jittered backoff."""
        loop = asyncio.get_running_loop()
        delay = BACKOFF_INITIAL
        while True:
            started = loop.time()
            try:
                await self._session()
            except (RedisError, OSError) as exc:
                self._note_failure(exc)
            except Exception as exc:  # a bug or an odd reply must not end the loop
                logger.exception("Redis subscriber connection failed unexpectedly")
                self._note_failure(exc)
            # A connection that lived a while was not part of a flapping streak.
            if loop.time() - started > BACKOFF_MAX:
                delay = BACKOFF_INITIAL
            await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _session(self) -> None:
        """One connection, from connect to failure (this returns only by raising)."""
        connection = self._new_connection()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await connection.connect()
            self._ready_token, _ = self._new_barrier()
            # Only channels subscribed while there was no connection can have
            # missed messages: with none, the restored connection is not news.
            self._announce = None
            if self.channels:
                self._announce = ConnectionRestored(
                    channels=frozenset(self.channels) if self._sharded else None
                )
            commands = self._commands(self._subscribe, self.channels)
            commands.append(("PING", self._ready_token))
            # No await between the channel snapshot and this write, and subscribe()
            # writes on this connection from here on: no channel falls between.
            self._connection = connection
            self._pong_pending, self._saw_data = True, False
            await self._send(connection, commands)
            reader = asyncio.create_task(self._read(connection))
            keepalive = asyncio.create_task(self._keepalive(connection))
            try:
                done, _ = await asyncio.wait(
                    [reader, keepalive], return_when=asyncio.FIRST_COMPLETED
                )
                failure = done.pop().exception()
                raise failure if failure is not None else ConnectionError("reader stopped")
            finally:
                reader.cancel()
                keepalive.cancel()
                await asyncio.wait([reader, keepalive])
        finally:
            self._connection = None
            self.ready.clear()
            self._barriers.pop(self._ready_token, None)
            # Waiting subscribers go on: the next connection re-subscribes them.
            for waiter in self._barriers.values():
                if not waiter.done():
                    waiter.set_result(None)
            self._barriers.clear()
            with contextlib.suppress(RedisError, OSError):
                await connection.disconnect(nowait=True)

    async def _read(self, connection: AbstractConnection) -> None:
        events, kind_message = self._events, self._kind
        cut = self._namespace_bytes
        batch = 0
        while True:
            try:
                reply = await connection.read_response()
            except ResponseError as exc:
                # A shard answers MOVED (or CLUSTERDOWN) to a channel it does not
                # serve; its other channels are fine: find the channel's owner.
                if not self._sharded:
                    raise
                self._trouble(exc)
                continue
            self._saw_data = True
            if type(reply) is list:
                kind = reply[0]
                if kind == kind_message:
                    # "replace": a stray non-UTF-8 publish must not cost everyone a
                    # reconnection; our own messages are always valid text.
                    channel, payload = cast(bytes, reply[1])[cut:], cast(bytes, reply[2])
                    await events.put(
                        Published(
                            channel.decode(errors="replace"), payload.decode(errors="replace")
                        )
                    )
                    batch += 1
                    if batch == _READ_BATCH:
                        batch = 0
                        await asyncio.sleep(0)
                elif kind == b"pong":
                    await self._on_pong(cast(bytes, reply[1]))
                elif (
                    kind == b"sunsubscribe"
                    and cast(bytes, reply[1])[cut:].decode(errors="replace") in self.channels
                ):
                    # Redis unsubscribed us itself: the channel's slot moved away.
                    self._trouble(ConnectionError("channel unsubscribed by a reshard"))
                # Other (un)subscribe acknowledgements need no handling: the PING
                # barriers after them say when Redis has processed them.
            elif isinstance(reply, bytes):
                # PING outside subscribed mode (no channel yet) answers plainly.
                await self._on_pong(reply)

    def _trouble(self, exc: BaseException) -> None:
        logger.info("Redis shard %s: %s", self.url, _describe(exc))
        self._on_trouble()

    async def _on_pong(self, payload: bytes) -> None:
        self._pong_pending = False
        waiter = self._barriers.pop(payload, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if payload == self._ready_token and not self.ready.is_set():
            self.ready.set()
            self.first_attempt.set()
            self._outage_logged = False
            if self._ever_ready:
                self.reconnects += 1
                BROKER_RECONNECTS.inc()
                logger.info("Redis subscriber reconnected (%d channels)", len(self.channels))
            self._ever_ready = True
            if self._announce is not None:
                # Queued by the reader itself so that it comes before any message
                # read after the re-subscription took effect.
                await self._events.put(self._announce)

    async def _keepalive(self, connection: AbstractConnection) -> None:
        """Fail the session when Redis stops answering: a dead peer that sent no
        reset (a network partition) would otherwise leave the reader waiting forever."""
        interval = PING_INTERVAL
        while True:
            await asyncio.sleep(interval)
            if self._pong_pending and not self._saw_data:
                raise TimeoutError(f"no answer from Redis for {interval:g} s")
            self._pong_pending, self._saw_data = True, False
            await self._send(connection, [("PING",)])

    async def _send(
        self, connection: AbstractConnection, commands: Iterable[tuple[str | bytes, ...]]
    ) -> None:
        # redis-py would silently reconnect a closed connection on send, behind
        # the reader's back; the session loop alone decides when to reconnect.
        if not connection.is_connected:
            raise ConnectionError("the Redis subscriber connection is closed")
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await connection.send_packed_command(
                connection.pack_commands(commands), check_health=False
            )

    def _new_connection(self) -> AbstractConnection:
        options: dict[str, Any] = dict(parse_url(self.url))
        connection_class = options.pop("connection_class", Connection)
        options.update(
            # RESP2 keeps pub/sub replies plain lists of bytes. Reads block (the
            # keepalive bounds them); retries are the session loop's job.
            protocol=2,
            decode_responses=False,
            socket_timeout=None,
            socket_connect_timeout=CONNECT_TIMEOUT,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),
            # Named after the process, so that CLIENT LIST shows whose it is.
            client_name=f"threadline-subscriber-{os.getpid()}",
        )
        return cast(AbstractConnection, connection_class(**options))

    def _new_barrier(self) -> tuple[bytes, asyncio.Future[None]]:
        token = b"threadline:%d" % next(self._tokens)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[token] = waiter
        return token, waiter

    def _note_failure(self, exc: BaseException) -> None:
        self.last_error = _describe(exc)
        self.first_attempt.set()
        self._on_trouble()  # its slots may have moved (a failover)
        # One warning per outage; the retries that follow it would only be noise.
        if self._outage_logged:
            logger.debug("Redis subscriber connection attempt failed: %s", self.last_error)
        else:
            self._outage_logged = True
            logger.warning("Redis subscriber connection failed: %s", self.last_error)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
