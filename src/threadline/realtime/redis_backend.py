"""The Redis side of live fan-out: one resilient SUBSCRIBE connection per process.

Owns the subscriber connection (subscribed to every channel that has a local
subscriber, re-subscribed after Redis comes back, with capped backoff), the
publishing client with bounded timeouts, and the health that ``/readyz`` reports.
It implements ``broker.Backend``; ``broker.Broker`` is its only caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Iterable
from typing import Any, Final, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from threadline.metrics import BROKER_RECONNECTS
from threadline.realtime.redis_pool import redis_pool

logger = logging.getLogger(__name__)

# The reader hands this many messages to the broker before it lets other tasks
# run: one socket read can hold thousands of small messages, and subscribers
# must get a turn to drain their queues before the next batch lands on them.
_READ_BATCH: Final = 64


class BrokerError(Exception):
    """Base of the broker's own errors, so a caller can catch them all at once.

    Its subclasses are named for what happened, like the domain errors in
    ``threadline.errors``, hence their N818 exemptions."""


class BrokerUnavailable(BrokerError):
    """Redis did not take a publish. The message is lost to pub/sub only: the
    event log in the database still has it, and subscribers fill gaps from there."""


class Published:
    """One message heard on a channel, as a backend hands it to the broker."""

    __slots__ = ("channel", "message")

    def __init__(self, channel: str, message: str) -> None:
        self.channel = channel
        self.message = message


class ConnectionRestored(Published):
    """A backend signal, not a message: the subscriber connection has just been
    established and every live channel is subscribed again. Whatever was published
    while there was no connection is lost to pub/sub."""

    def __init__(self) -> None:
        super().__init__(channel="", message="")


CONNECTION_RESTORED: Final = ConnectionRestored()


class RedisBackend:
    """Redis pub/sub with no first-subscribe race, automatic reconnection and
    bounded timeouts.

    ``subscribe`` returns once Redis has acknowledged the SUBSCRIBE (or at once
    while disconnected: the next connection subscribes the channel and sends
    ``CONNECTION_RESTORED``, which tells subscribers to catch up).
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 1.0,
        publish_timeout: float = 1.0,
        subscribe_timeout: float = 2.0,
        ping_interval: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        max_pending: int = 10_000,
    ) -> None:
        self._url = url
        # Pub/sub ignores database numbers: a deployment on database N gets its
        # channels under "dbN:" so that it hears no other deployment (or test run)
        # sharing the server. Database 0 keeps plain names, as before.
        self._namespace = channel_namespace(url)
        self._namespace_bytes = len(self._namespace.encode())
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._subscribe_timeout = subscribe_timeout
        self._ping_interval = ping_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        # Bounded so that a stalled event loop pushes back on the socket (Redis
        # then buffers, and drops us past its limit) instead of on our memory.
        self._events: asyncio.Queue[Published] = asyncio.Queue(maxsize=max_pending)
        self._channels: set[str] = set()
        self._barriers: dict[bytes, asyncio.Future[None]] = {}
        self._tokens = itertools.count(1)
        self._connection: AbstractConnection | None = None
        self._ready = asyncio.Event()
        self._ready_token = b""
        self._announce_ready = False
        self._first_attempt = asyncio.Event()
        self._ever_ready = False
        self._outage_logged = False
        self._pong_pending = False
        self._saw_data = False
        self._reconnects = 0
        self._last_error: str | None = None
        self._runner: asyncio.Task[None] | None = None
        self._publish_pool: ConnectionPool[Connection] | None = None
        self._publisher: Redis[bytes] | None = None
        self._outbox: list[tuple[str, Any, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def connect(self) -> None:
        """Start the connection loop and wait briefly for the first connection.

        Does not raise when Redis is unreachable: the process keeps serving,
        ``health()`` says what is wrong, and the loop keeps trying.
        """
        if self._runner is not None:
            return
        self._publish_pool = redis_pool(
            self._url,
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=self._publish_timeout,
            # redis-py retries with backoff of its own by default; a publish must
            # fail fast instead, so the caller can log it and move on.
            retry=Retry(NoBackoff(), 0),
        )
        self._publisher = Redis(connection_pool=self._publish_pool)
        self._runner = asyncio.create_task(self._run(), name="threadline-redis-subscriber")
        try:
            async with asyncio.timeout(2 * self._connect_timeout):
                await self._first_attempt.wait()
        except TimeoutError:
            pass
        if not self._ready.is_set():
            logger.warning(
                "Redis is not reachable yet (%s); retrying in the background", self._last_error
            )

    async def disconnect(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            # asyncio.wait, unlike awaiting the task, does not re-raise its
            # cancellation here, so our own caller's cancellation stays distinct.
            await asyncio.wait([runner])
        pool, self._publish_pool, self._publisher = self._publish_pool, None, None
        if pool is not None:
            await pool.disconnect()

    def health(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            "connected": self._ready.is_set(),
            "reconnects": self._reconnects,
            "last_error": self._last_error,
        }

    # -- broker.Backend -----------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        connection = self._connection
        if connection is None:
            return
        # A PING after the SUBSCRIBE: its answer proves Redis processed the
        # SUBSCRIBE, so a publish made after we return reaches this process.
        token, answered = self._new_barrier()
        try:
            await self._send(
                connection, [("SUBSCRIBE", self._namespace + channel), ("PING", token)]
            )
            async with asyncio.timeout(self._subscribe_timeout):
                await answered
        except (RedisError, OSError) as exc:
            # The reader sees the same failure and reconnects; the reconnection
            # subscribes this channel and tells its subscribers to catch up.
            logger.warning("SUBSCRIBE %s not confirmed: %s", channel, _describe(exc))
        finally:
            self._barriers.pop(token, None)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        connection = self._connection
        if connection is None:
            return
        try:
            await self._send(connection, [("UNSUBSCRIBE", self._namespace + channel)])
        except (RedisError, OSError) as exc:
            # A broken connection has dropped every subscription anyway, and the
            # next one subscribes only the channels still wanted.
            logger.debug("UNSUBSCRIBE %s not sent: %s", channel, _describe(exc))

    async def publish(self, channel: str, message: str) -> None:
        """Publish once Redis has taken the message.

        Publishes made while a batch is on its way go out together in the next
        pipeline: under load a round trip carries many of them, and each costs a
        fraction of a command of its own. Order is kept: one batch at a time.
        """
        if self._publisher is None:
            raise BrokerUnavailable("the Redis backend is not connected")
        taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((channel, message, taken))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="threadline-redis-publish")
        try:
            # A timeout cancels `taken`; the flusher then skips its answer.
            async with asyncio.timeout(self._publish_timeout):
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
            async with asyncio.timeout(self._publish_timeout):
                pipe = publisher.pipeline(transaction=False)
                namespace = self._namespace
                for channel, message, _ in batch:
                    pipe.publish(namespace + channel, message)
                await pipe.execute()
        except BrokerUnavailable as exc:
            failure = exc
        except (RedisError, OSError, TimeoutError) as exc:
            failure = BrokerUnavailable(f"cannot publish: Redis unreachable ({_describe(exc)})")
        for _, _, taken in batch:
            if taken.done():
                continue
            if failure is None:
                taken.set_result(None)
            else:
                taken.set_exception(failure)

    async def next_published(self) -> Published:
        return await self._events.get()

    # -- the subscriber connection ----------------------------------------------

    async def _run(self) -> None:
        """Keep one subscriber connection up, forever, with capped jittered backoff."""
        loop = asyncio.get_running_loop()
        delay = self._backoff_initial
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
            if loop.time() - started > self._backoff_max:
                delay = self._backoff_initial
            await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
            delay = min(delay * 2, self._backoff_max)

    async def _session(self) -> None:
        """One connection, from connect to failure (this returns only by raising)."""
        connection = self._new_connection()
        try:
            async with asyncio.timeout(self._connect_timeout):
                await connection.connect()
            self._ready_token, _ = self._new_barrier()
            commands: list[tuple[str | bytes, ...]] = []
            # Only channels subscribed while there was no connection can have
            # missed messages: with none, the restored connection is not news.
            self._announce_ready = bool(self._channels)
            if self._channels:
                commands.append(("SUBSCRIBE", *(self._namespace + c for c in self._channels)))
            commands.append(("PING", self._ready_token))
            # The channel snapshot and this write happen with no await between
            # them, and from here on subscribe() writes on this connection too,
            # so no channel falls between the two.
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
            self._ready.clear()
            self._barriers.pop(self._ready_token, None)
            # Waiting subscribers go on: the next connection re-subscribes them.
            for waiter in self._barriers.values():
                if not waiter.done():
                    waiter.set_result(None)
            self._barriers.clear()
            with contextlib.suppress(RedisError, OSError):
                await connection.disconnect(nowait=True)

    async def _read(self, connection: AbstractConnection) -> None:
        events = self._events
        cut = self._namespace_bytes
        batch = 0
        while True:
            reply = await connection.read_response()
            self._saw_data = True
            if type(reply) is list:
                kind = reply[0]
                if kind == b"message":
                    # RESP2 without decode_responses: channel and payload are bytes.
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
                # (un)subscribe acknowledgements need no handling: the PING
                # barriers after them say when Redis has processed them.
            elif isinstance(reply, bytes):
                # PING outside subscribed mode (no channel yet) answers plainly.
                await self._on_pong(reply)

    async def _on_pong(self, payload: bytes) -> None:
        self._pong_pending = False
        waiter = self._barriers.pop(payload, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if payload == self._ready_token and not self._ready.is_set():
            self._on_ready()
            if self._announce_ready:
                # Queued by the reader itself so that it comes before any message
                # read after the re-subscription took effect.
                await self._events.put(CONNECTION_RESTORED)

    def _on_ready(self) -> None:
        self._ready.set()
        self._first_attempt.set()
        self._outage_logged = False
        if self._ever_ready:
            self._reconnects += 1
            BROKER_RECONNECTS.inc()
            logger.info("Redis subscriber reconnected (%d channels)", len(self._channels))
        self._ever_ready = True

    async def _keepalive(self, connection: AbstractConnection) -> None:
        """Fail the session when Redis stops answering: a dead peer that sent no
        reset (a network partition) would otherwise leave the reader waiting forever."""
        while True:
            await asyncio.sleep(self._ping_interval)
            if self._pong_pending and not self._saw_data:
                raise TimeoutError(f"no answer from Redis for {self._ping_interval:g} s")
            self._pong_pending, self._saw_data = True, False
            await self._send(connection, [("PING",)])

    async def _send(
        self, connection: AbstractConnection, commands: Iterable[tuple[str | bytes, ...]]
    ) -> None:
        # redis-py would silently reconnect a closed connection on send, behind
        # the reader's back; the session loop alone decides when to reconnect.
        if not connection.is_connected:
            raise ConnectionError("the Redis subscriber connection is closed")
        async with asyncio.timeout(self._connect_timeout):
            await connection.send_packed_command(
                connection.pack_commands(commands), check_health=False
            )

    def _new_connection(self) -> AbstractConnection:
        options: dict[str, Any] = dict(parse_url(self._url))
        connection_class = options.pop("connection_class", Connection)
        options.update(
            # RESP2 keeps pub/sub replies plain lists; bytes avoid decoding channel
            # names we only compare. Reads block (the keepalive bounds them) and
            # connection attempts are bounded; retries are the session loop's job.
            protocol=2,
            decode_responses=False,
            socket_timeout=None,
            socket_connect_timeout=self._connect_timeout,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),
            client_name="threadline-subscriber",
        )
        return cast(AbstractConnection, connection_class(**options))

    def _new_barrier(self) -> tuple[bytes, asyncio.Future[None]]:
        token = b"threadline:%d" % next(self._tokens)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[token] = waiter
        return token, waiter

    def _note_failure(self, exc: BaseException) -> None:
        self._last_error = _describe(exc)
        self._first_attempt.set()
        # One warning per outage; the retries that follow it would only be noise.
        if self._outage_logged:
            logger.debug("Redis subscriber connection attempt failed: %s", self._last_error)
        else:
            self._outage_logged = True
            logger.warning("Redis subscriber connection failed: %s", self._last_error)


def channel_namespace(url: str) -> str:
    """The prefix of every channel name for a Redis URL: "dbN:" for database N > 0."""
    database = int(parse_url(url).get("db") or 0)
    return f"db{database}:" if database else ""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
