"""Notifications: who is told about mentions, replies, reactions and being added. Nobody
is notified of their own action, a muted thread notifies no one, and only someone who
may read the thread now is told about its messages (``permissions.readers``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.db import UnitOfWork, count_rows
from threadline.errors import BadInput
from threadline.models import Message, Notification, NotificationKind, Thread, User, utcnow
from threadline.services.events import UserEvent
from threadline.services.pagination import Page, PageRequest, make_page, time_id_key
from threadline.services.permissions import parse_id, readers

MAX_IDS = 500
CLOCK_SKEW = timedelta(hours=1)


async def _reachable(
    session: AsyncSession, thread_id: uuid.UUID, users: Iterable[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of ``users`` who may read the thread and have not muted it."""
    found = await readers(session, thread_id, users)
    return {uid for uid, mine in found.items() if mine is None or not mine.muted}


async def _told(
    session: AsyncSession,
    kind: NotificationKind,
    message: Message,
    users: Sequence[uuid.UUID],
    actor_id: uuid.UUID | None = None,
) -> set[uuid.UUID]:
    """Those of ``users`` told of ``message`` by a notification of ``kind`` already (by
    ``actor_id``, if given)."""
    if not users:
        return set()
    query = select(Notification.user_id).where(
        Notification.user_id.in_(users),
        # None is older than its message (give or take the skew between the clocks of the
        # processes that stamped them): the (user, created_at) index reads no further.
        Notification.created_at >= message.created_at - CLOCK_SKEW,
        Notification.message_id == message.id,
        Notification.kind == kind.value,
    )
    if actor_id is not None:
        query = query.where(Notification.actor_id == actor_id)
    return set(await session.scalars(query))


def _create(
    uow: UnitOfWork,
    user_id: uuid.UUID,
    kind: NotificationKind,
    actor: User,
    thread_id: uuid.UUID,
    message_id: uuid.UUID | None,
) -> None:
    notification = Notification(
        id=uuid.uuid4(),
        user_id=user_id,
        kind=kind.value,
        actor_id=actor.id,
        thread_id=thread_id,
        message_id=message_id,
        created_at=utcnow(),
    )
    uow.session.add(notification)
    uow.emit(UserEvent(user_id, "notification", {"notification_id": str(notification.id)}))


async def notify_added(
    uow: UnitOfWork, actor: User, thread: Thread, user_ids: Sequence[uuid.UUID]
) -> None:
    for user_id in user_ids:
        if user_id != actor.id:
            _create(uow, user_id, NotificationKind.ADDED_TO_THREAD, actor, thread.id, None)
    await uow.session.flush()


async def notify_message(
    uow: UnitOfWork,
    actor: User,
    message: Message,
    parent: Message | None,
    mentioned: Sequence[tuple[uuid.UUID, bool]],
) -> None:
    """MENTION for each mentioned participant (``messages._mentions``), REPLY for the
    parent's author (once each)."""
    told: set[uuid.UUID] = {actor.id}
    for user_id, muted in mentioned:
        if user_id not in told and not muted:
            _create(uow, user_id, NotificationKind.MENTION, actor, message.thread_id, message.id)
        told.add(user_id)
    if (
        parent is not None
        and parent.author_id is not None
        and parent.author_id not in told
        and await _reachable(uow.session, message.thread_id, [parent.author_id])
    ):
        _create(uow, parent.author_id, NotificationKind.REPLY, actor, message.thread_id, message.id)
    if len(told) > 1 or parent is not None:
        await uow.session.flush()


async def notify_edit(
    uow: UnitOfWork, actor: User, message: Message, mentioned: Sequence[tuple[uuid.UUID, bool]]
) -> None:
    """MENTION for each participant an edit added a mention of who was not told of it yet."""
    told = await _told(uow.session, NotificationKind.MENTION, message, [u for u, _ in mentioned])
    await notify_message(uow, actor, message, None, [m for m in mentioned if m[0] not in told])


async def notify_reaction(uow: UnitOfWork, actor: User, message: Message) -> None:
    """REACTION for the author, once per reactor and message: a reaction taken back and
    given again, or another emoji, tells them nothing new."""
    author = message.author_id
    if author is None or author == actor.id:
        return
    if not await _reachable(uow.session, message.thread_id, [author]):
        return
    if await _told(uow.session, NotificationKind.REACTION, message, [author], actor.id):
        return
    _create(uow, author, NotificationKind.REACTION, actor, message.thread_id, message.id)
    await uow.session.flush()


async def notifications_of(
    session: AsyncSession, viewer: User, unread_only: bool, request: PageRequest
) -> tuple[Page[Notification], int]:
    after = request.forwards_key("Notifications page")
    query = select(Notification).where(Notification.user_id == viewer.id)
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    if after is not None:
        query = query.where(tuple_(Notification.created_at, Notification.id) < time_id_key(after))
    query = query.order_by(Notification.created_at.desc(), Notification.id.desc())
    rows = list(await session.scalars(query.limit(request.size + 1)))
    unread = await count_rows(
        session, Notification, Notification.user_id == viewer.id, Notification.read_at.is_(None)
    )
    page = make_page(rows, request, lambda n: [n.created_at.isoformat(), str(n.id)])
    return page, unread


async def mark_read(
    uow: UnitOfWork, viewer: User, ids: Sequence[str] | None, everything: bool
) -> int:
    """Mark the viewer's notifications read; returns how many changed."""
    statement = update(Notification).where(
        Notification.user_id == viewer.id, Notification.read_at.is_(None)
    )
    if not everything:
        if not ids:
            raise BadInput("Give `ids` or `all: true`")
        if len(ids) > MAX_IDS:
            raise BadInput(f"At most {MAX_IDS} ids at once")
        statement = statement.where(Notification.id.in_([parse_id(i, "Notification") for i in ids]))
    result = await uow.session.execute(
        statement.values(read_at=utcnow()).returning(Notification.id)
    )
    return len(result.all())


async def get_notification(
    session: AsyncSession, viewer: User, notification_id: uuid.UUID
) -> Notification | None:
    row = await session.get(Notification, notification_id)
    return row if row is not None and row.user_id == viewer.id else None
