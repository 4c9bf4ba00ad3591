"""Live fan-out of broadcast threadEvents subscriptions, without a task wake-up per socket.

Subscribers of the same operation and variables on one thread form a group with
one broker subscription and one pump, which renders each event once and writes
it straight to every caught-up member whose socket takes it without waiting.
Members still replaying, or whose socket pushed back, get it queued (bounded)
for their own task. A busy thread costs one write per subscriber per event.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Coroutine, Generator, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from threadline.errors import Conflict, NotFound
from threadline.metrics import EVENTS_DELIVERED
from threadline.realtime.deliveries import DeliveryTracker
from threadline.realtime.sinks import DirectSink, text_frame
from threadline.realtime.thread_feed import ThreadFeed
from threadline.services.events import (
    LoggedEvent,
    ends_subscription,
    stops_any,
    stops_viewer,
    who_stops,
)

log = logging.getLogger(__name__)

# A socket that has not taken a frame for this long is given up on (resume error).
SEND_TIMEOUT_SECONDS = 10.0
# The pump follows the thread for the group, not for a viewer: no removal ends it.
_NOBODY = uuid.UUID(int=0)


class Frame(NamedTuple):
    payload: str
    # ``who_stops`` of the events after its own committed once it was rendered: it may
    # show what came after them (none looked for if it read only its event).
    ended: Sequence[uuid.UUID | str] = ()

    def hides_from(self, viewer_id: uuid.UUID) -> bool:
        return stops_any(self.ended, viewer_id)


class FrameSource(Protocol):
    """One operation's frames: the same ``key``, the same payload for an event."""

    @property
    def key(self) -> tuple[Hashable, ...]: ...

    async def render(self, event: LoggedEvent, horizon: int) -> Frame:
        """The operation's frame for this event, rendered after every event of the
        thread up to ``horizon`` (>= its seq) was committed: a frame shows the messages
        it nests (a reply's parent, the thread's last message) as they were then, so it
        is only shared with readers that know of no later event."""
        ...


class Resume:
    """Finishes a coroutine that ``start`` ran up to its first suspension."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        # The same hand-over ``await`` does: pass on what the coroutine waits for,
        # and send back (or throw in) what the awaiting task gets.
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                received = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = coro.send(received)
                except StopIteration:
                    return

    def close(self) -> None:
        self._coro.close()


def start(coro: Coroutine[Any, Any, Any]) -> Resume | None:
    """Run ``coro`` until it first waits: None if it finished without waiting.

    A socket write normally completes at once; one that waits (the peer stopped
    reading) is handed as a ``Resume`` to that subscriber's task, so that one slow
    socket never holds up the others.
    """
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return Resume(coro, waiting_on)


@dataclass(eq=False, slots=True)
class Member:
    """One subscription in a group: where its frames go and how far it got."""

    group: Group
    viewer_id: uuid.UUID
    sink: DirectSink
    # The newest seq handed to the socket, and the newest it has taken.
    last: int
    delivered: int = 0
    # What the delivery tracker was last told (it asks at each flush).
    reported: int = 0
    # Made on first use: most members never need one, and an empty deque is 600 bytes.
    backlog: deque[tuple[LoggedEvent, str]] | None = None
    # While its own task writes (catching up, or a write that waits), the pump queues.
    busy: bool = True
    pending: tuple[Resume, int] | None = None
    waiting_on_socket: bool = False
    finished: bool = False
    failure: BaseException | None = None
    _wake: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        self.delivered = self.reported = self.last

    def offer(
        self, event: LoggedEvent, payload: str, stops: object, frames: dict[str, bytes]
    ) -> bool:
        """Take the group's next event: True when it was written to the socket now.
        ``stops`` (``who_stops(event)``) and ``frames`` are shared by all members."""
        seq = event.seq
        if self.finished or seq <= self.last:
            return False
        if self.busy or seq != self.last + 1:
            if self.backlog is None:
                self.backlog = deque()
            elif len(self.backlog) >= self.group.hub.backlog_limit:
                self.backlog = None  # the client refetches with afterSeq: drop the memory now
                self.fail(self._resume_error("fell too far behind"))
                return False
            self.backlog.append((event, payload))
            self.wake()
            return False
        if self.sink.closed:
            return False
        try:
            waiting = self._send(payload, frames)
        except Exception as exc:  # the socket is gone: its connection is being torn down
            self.fail(exc)
            return False
        self.last = seq
        if waiting is None:
            self.delivered = seq
        else:  # its own task finishes the write
            self.busy = True
            self.pending = (waiting, seq)
            self.wake()
        # An event that ends the subscription (the viewer removed, the thread deleted)
        # is its last, also while its write waits: nothing may follow it.
        if stops_viewer(stops, self.viewer_id):
            self.finish()
        return waiting is None

    def _send(self, payload: str, frames: dict[str, bytes]) -> Resume | None:
        """Hand one frame to the socket: as ready-made bytes (cached in ``frames`` by
        operation-id prefix) when it takes them now, else through ASGI."""
        sink = self.sink
        if sink.raw is not None:
            if (frame := frames.get(sink.prefix)) is None:
                frame = frames[sink.prefix] = text_frame(sink.frame(payload).encode())
            if sink.raw.try_write(frame):
                return None
        return start(sink.send_text(sink.frame(payload)))

    def wake(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def finish(self) -> None:
        self.finished = True
        self.wake()

    def fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
        self.finish()

    def unreported(self) -> int | None:
        """The delivered seq the tracker has not been told yet, if any (and now it has)."""
        if self.delivered <= self.reported:
            return None
        self.reported = self.delivered
        return self.delivered

    async def run(self) -> None:
        """Catch up from the log, then write whatever the pump could not, until the end.
        Raises CONFLICT with ``afterSeq`` when the subscriber falls too far behind or
        stops reading; returns after an event that ends it (removed, deleted)."""
        try:
            while True:
                if self.pending is not None:
                    waiting, seq = self.pending
                    self.pending = None
                    await self._finish_write(waiting, seq)
                if self.failure is not None:
                    raise self.failure
                if self.finished:
                    return
                if await self._step():
                    continue
                self.busy = False
                self._wake = asyncio.get_running_loop().create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
                    self.busy = True
        finally:
            if self.pending is not None:
                self.pending[0].close()
                self.pending = None
            final = self.unreported()
            if final is not None:
                self.group.hub.deliveries.delivered(self.viewer_id, self.group.thread_id, final)
            self.group.leave(self)

    async def _step(self) -> bool:
        """Write the next event this member lacks, if it has one: False when caught up."""
        backlog = self.backlog
        if backlog is not None:
            while backlog and backlog[0][0].seq <= self.last:
                backlog.popleft()
            if backlog and backlog[0][0].seq == self.last + 1:
                event, payload = backlog.popleft()
                await self._write(event, payload)
                return True
        if self.last >= self.group.position and not backlog:
            return False
        # Events the pump offered before this member joined, or a gap before the
        # queued ones: they are in the log (events are published after commit).
        events = await self.group.hub.feed.from_log(self.group.thread_id, self.last)
        if not events:
            return False
        # Read after the batch was committed: a message deleted up to its end shows so.
        horizon = events[-1].seq
        frames = [(event, await self.group.source.render(event, horizon)) for event in events]
        if any(frame.hides_from(self.viewer_id) for _, frame in frames):
            raise NotFound("Thread not found")
        for event, frame in frames:
            if self.finished:
                break
            await self._write(event, frame.payload)
        return True

    async def _write(self, event: LoggedEvent, payload: str) -> None:
        if self.sink.closed:
            self.finish()
            return
        waiting = self._send(payload, {})
        self.last = event.seq
        if waiting is not None:
            await self._finish_write(waiting, event.seq)
        self.delivered = event.seq
        EVENTS_DELIVERED.inc()
        if ends_subscription(event, self.viewer_id):
            self.finish()

    async def _finish_write(self, waiting: Resume, seq: int) -> None:
        self.waiting_on_socket = True
        try:
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                await waiting
        except TimeoutError:
            self.last = seq - 1
            raise self._resume_error("stopped reading") from None
        finally:
            self.waiting_on_socket = False
        self.delivered = seq

    def _resume_error(self, why: str) -> Conflict:
        return Conflict(f"This subscriber {why}: subscribe again with afterSeq", afterSeq=self.last)


class Group:
    """The local subscribers of one operation on one thread, and their pump."""

    def __init__(
        self,
        hub: Fanout,
        key: tuple[Any, ...],
        thread_id: uuid.UUID,
        source: FrameSource,
        position: int,
    ) -> None:
        self.hub = hub
        self.key = key
        self.thread_id = thread_id
        self.source = source
        # The newest seq the pump has offered to the members.
        self.position = position
        self.members: set[Member] = set()
        self._task: asyncio.Task[None] | None = asyncio.create_task(
            self._pump(), name=f"fanout {self.thread_id}"
        )

    async def _pump(self) -> None:
        try:
            events = self.hub.feed.ordered(
                self.thread_id, _NOBODY, self.position, refill_when_behind=True
            )
            async for event in events:
                frame = await self.source.render(event, event.seq)
                if frame.ended:
                    for member in [m for m in self.members if frame.hides_from(m.viewer_id)]:
                        member.fail(NotFound("Thread not found"))
                payload = frame.payload
                self.position = event.seq
                stops = who_stops(event)
                frames: dict[str, bytes] = {}
                written = 0
                for member in list(self.members):
                    written += member.offer(event, payload, stops, frames)
                if written:
                    EVENTS_DELIVERED.inc(written)
        except Exception as exc:  # the broker closed, or rendering failed
            log.info("fan-out of thread %s stopped: %r", self.thread_id, exc)
            for member in list(self.members):
                error = member._resume_error("was cut off")
                error.__cause__ = exc
                member.fail(error)
        finally:
            # Ended normally only after ThreadDeleted, which ends each member as it
            # writes it (some may still be catching up to it).
            self.hub.forget(self)
            # The ended task keeps this frame (its exception's traceback): no cycle back.
            self._task = None

    def leave(self, member: Member) -> None:
        self.members.discard(member)
        if not self.members:
            self.hub.forget(self)
            if self._task is not None and not self._task.done():
                self._task.cancel()


class Fanout:
    """The groups of this process, by (thread, operation, variables)."""

    def __init__(self, feed: ThreadFeed, deliveries: DeliveryTracker, backlog_limit: int) -> None:
        self.feed = feed
        self.deliveries = deliveries
        # How far behind the pump a member may fall before it is cut off (afterSeq).
        self.backlog_limit = backlog_limit
        self._groups: dict[tuple[Any, ...], Group] = {}
        deliveries.add_source(self._delivered_since_asked)

    def _delivered_since_asked(self) -> Iterator[tuple[uuid.UUID, uuid.UUID, int]]:
        for group in list(self._groups.values()):
            for member in list(group.members):
                seq = member.unreported()
                if seq is not None:
                    yield member.viewer_id, group.thread_id, seq

    def join(
        self,
        source: FrameSource,
        thread_id: uuid.UUID,
        viewer_id: uuid.UUID,
        after: int,
        newest: int,
        sink: DirectSink,
    ) -> Member:
        """A member that will send this subscription every event after ``after``.

        A new group follows the thread from ``newest`` (its last seq, read before
        this call); the member's ``run`` replays the rest from the log.
        """
        key = (thread_id, *source.key)
        if (group := self._groups.get(key)) is None:
            group = self._groups[key] = Group(self, key, thread_id, source, newest)
        member = Member(group, viewer_id, sink, after)
        group.members.add(member)
        return member

    def forget(self, group: Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]

    def stats(self) -> dict[str, int]:
        """Groups, members, members written to without ASGI, and members whose
        socket is not taking frames right now."""
        members = [m for g in self._groups.values() for m in g.members]
        return {
            "groups": len(self._groups),
            "members": len(members),
            "raw": sum(1 for m in members if m.sink.raw is not None),
            "waiting": sum(1 for m in members if m.pending is not None or m.waiting_on_socket),
        }
