"""Channel names and wire encoding of what crosses processes through the broker.

Per thread: logged events and ephemeral activity; per user: things addressed to
them and presence; one channel for ending sessions.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import orjson

from threadline.metrics import EVENTS_PUBLISHED
from threadline.services.events import (
    ActivityEvent,
    EventKind,
    LoggedEvent,
    SystemRoleChanged,
    UserEvent,
    who_stops,
)

SESSIONS_CHANNEL = "sessions"


class Publisher(Protocol):
    async def publish(self, channel: str, message: str) -> None: ...


def thread_channel(thread_id: uuid.UUID | str) -> str:
    return f"thread:{thread_id}"


def activity_channel(thread_id: uuid.UUID | str) -> str:
    return f"activity:{thread_id}"


def user_channel(user_id: uuid.UUID | str) -> str:
    return f"user:{user_id}"


def presence_channel(user_id: uuid.UUID | str) -> str:
    return f"presence:{user_id}"


def encode_logged(event: LoggedEvent) -> str:
    return orjson.dumps(
        {
            "t": str(event.thread_id),
            "s": event.seq,
            "k": event.kind.value,
            "p": event.payload,
            "a": str(event.actor_id) if event.actor_id else None,
            "at": event.at.isoformat(),
        }
    ).decode()


def decode_logged(raw: str) -> LoggedEvent:
    data: dict[str, Any] = orjson.loads(raw)
    return LoggedEvent(
        uuid.UUID(data["t"]),
        int(data["s"]),
        EventKind(data["k"]),
        data["p"],
        uuid.UUID(data["a"]) if data.get("a") else None,
        datetime.fromisoformat(data["at"]),
    )


def is_logged_event(raw: str) -> bool:
    """Whether a message heard on a thread's channels is a logged event, not activity.

    Both encodings open with the thread id (``{"t":"<36 characters>"``); a logged
    event's next key is its seq ``"s"``, an activity's is its kind ``"k"``.
    """
    return raw.startswith(',"s":', 43)


def encode_activity(event: ActivityEvent) -> str:
    return orjson.dumps(
        {"t": str(event.thread_id), "k": event.kind, "u": str(event.user_id), "d": event.data}
    ).decode()


def decode_activity(raw: str) -> ActivityEvent:
    data = orjson.loads(raw)
    return ActivityEvent(uuid.UUID(data["t"]), data["k"], uuid.UUID(data["u"]), data["d"])


def encode_user_event(event: UserEvent) -> str:
    return orjson.dumps({"u": str(event.user_id), "k": event.kind, "d": event.data}).decode()


def decode_user_event(raw: str) -> UserEvent:
    data = orjson.loads(raw)
    return UserEvent(uuid.UUID(data["u"]), data["k"], data["d"])


def encode_sessions_signal(
    sessions: Sequence[str] = (), users: Sequence[str] = (), reauthorize: Sequence[str] = ()
) -> str:
    """What SESSIONS_CHANNEL carries: Clerk sessions ended and users deleted, by Clerk
    id (their sockets close for good); users whose sockets must reconnect (a role
    changed), by local id (unique to the database, where a Clerk id may not be)."""
    return orjson.dumps(
        {"sessions": list(sessions), "users": list(users), "reauthorize": list(reauthorize)}
    ).decode()


def routes(event: object) -> list[tuple[str, str]]:
    """Where an event is published, and as what."""
    if isinstance(event, LoggedEvent):
        message = encode_logged(event)
        # On a Redis Cluster the activity channel (typing) may be read over another
        # shard's connection: an event that ends subscriptions goes on both, so that no
        # later typing overtakes it. Readers also take it from the thread's channel, the
        # only one older versions send it on.
        channels = [thread_channel(event.thread_id)]
        if who_stops(event) is not None:
            channels.append(activity_channel(event.thread_id))
        return [(channel, message) for channel in channels]
    if isinstance(event, ActivityEvent):
        return [(activity_channel(event.thread_id), encode_activity(event))]
    if isinstance(event, UserEvent):
        return [(user_channel(event.user_id), encode_user_event(event))]
    if isinstance(event, SystemRoleChanged):
        return [(SESSIONS_CHANNEL, encode_sessions_signal(reauthorize=[str(event.user_id)]))]
    raise TypeError(f"cannot publish {type(event).__name__}")


async def publish_all(broker: Publisher, events: Sequence[object]) -> None:
    """Publish committed events in order; the first failure is raised after trying all."""
    failure: Exception | None = None
    for event in events:
        try:
            for channel, message in routes(event):
                await broker.publish(channel, message)
            EVENTS_PUBLISHED.inc()
        except Exception as exc:  # the log has logged events; subscribers fill gaps
            failure = failure or exc
    if failure is not None:
        raise failure
