"""Threads and participants: creating, updating, membership and roles. Role rules that
no directive expresses live here: nobody grants a role above their own, a thread keeps
an OWNER, and a direct thread's members can only leave it."""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.db import UnitOfWork, count_rows
from threadline.errors import BadInput, Conflict, Forbidden, NotFound
from threadline.models import Thread, ThreadParticipant, ThreadRole, User, utcnow
from threadline.models.queries import Query
from threadline.services import notifications
from threadline.services.events import EventKind, UserEvent, append_event
from threadline.services.pagination import Page, PageRequest, id_key, make_page, time_id_key
from threadline.services.permissions import (
    ThreadAccess,
    access_thread,
    grant,
    parse_id,
    thread_role_at_least,
)
from threadline.services.search import contains_pattern, contains_text
from threadline.services.text_rules import clean_description, clean_search, clean_title

MAX_INITIAL_PARTICIPANTS = 500


async def _live_users(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, User]:
    if not ids:
        return {}
    rows = await session.scalars(select(User).where(User.id.in_(ids), User.deleted_at.is_(None)))
    return {u.id: u for u in rows}


def _membership(user_id: uuid.UUID, thread_id: uuid.UUID, role: ThreadRole | None) -> UserEvent:
    return UserEvent(
        user_id, "membership", {"thread_id": str(thread_id), "role": role.value if role else None}
    )


async def create_thread(
    uow: UnitOfWork,
    actor: User,
    title: str,
    description: str | None = None,
    participant_ids: Sequence[str] = (),
) -> Thread:
    clean = clean_title(title)
    ids = list(dict.fromkeys(parse_id(p, "User") for p in participant_ids))
    if len(ids) > MAX_INITIAL_PARTICIPANTS:
        raise BadInput(f"At most {MAX_INITIAL_PARTICIPANTS} participants at creation")
    users = await _live_users(uow.session, [i for i in ids if i != actor.id])
    missing = [i for i in ids if i != actor.id and i not in users]
    if missing:
        raise NotFound("User not found", userId=str(missing[0]))
    roles = {actor.id: ThreadRole.OWNER} | dict.fromkeys(users, ThreadRole.MEMBER)
    return await _new_thread(
        uow, actor, roles, title=clean, description=clean_description(description)
    )


async def _new_thread(
    uow: UnitOfWork, actor: User, roles: dict[uuid.UUID, ThreadRole], **fields: Any
) -> Thread:
    """A thread the actor creates now, stored with its participants, who are told."""
    now = utcnow()
    thread = Thread(
        created_by_id=actor.id, created_at=now, updated_at=now, last_activity_at=now, **fields
    )
    uow.session.add(thread)
    await uow.session.flush()
    uow.session.add_all(
        ThreadParticipant(thread_id=thread.id, user_id=user_id, role=role.value)
        for user_id, role in roles.items()
    )
    await uow.session.flush()
    # Queued only now: a direct thread that lost its race failed the first flush above.
    for user_id, role in roles.items():
        uow.emit(_membership(user_id, thread.id, role))
    await notifications.notify_added(uow, actor, thread, list(roles))
    return thread


async def create_direct_thread(uow: UnitOfWork, actor: User, user_id: str) -> Thread:
    """The one direct thread of two users; concurrent calls get the same thread, and a
    caller who had left it rejoins it."""
    other_id = parse_id(user_id, "User")
    if other_id == actor.id:
        raise BadInput("A direct thread needs another user")
    other = (await _live_users(uow.session, [other_id])).get(other_id)
    if other is None:
        raise NotFound("User not found")
    key = ":".join(sorted((str(actor.id), str(other_id))))
    existing = await uow.session.scalar(select(Thread).where(Thread.direct_key == key))
    if existing is not None and existing.deleted_at is None:
        return await _rejoin(uow, actor, existing)
    try:
        async with uow.session.begin_nested():
            if existing is not None:
                # A deleted direct thread gives its key up for a fresh one.
                existing.direct_key = None
                await uow.session.flush()
            thread = await _new_thread(
                uow,
                actor,
                dict.fromkeys((actor.id, other_id), ThreadRole.OWNER),
                title=f"{actor.display_name} & {other.display_name}"[:200],
                is_direct=True,
                direct_key=key,
            )
    except IntegrityError:
        winner = await uow.session.scalar(select(Thread).where(Thread.direct_key == key))
        if winner is None:
            raise
        return winner
    return thread


async def _rejoin(uow: UnitOfWork, actor: User, thread: Thread) -> Thread:
    """The existing direct thread, with the caller in it again if they had left it: the
    pair's only thread, so asking again rejoins it as a fresh OWNER (markers at 0) who
    sees the whole history. The other user, if they left, is not pulled back in."""
    # Re-read: loaded above unlocked, its last_seq (where the rejoiner joins) may be old.
    locked = await uow.session.get(Thread, thread.id, with_for_update=True, populate_existing=True)
    if locked is None or locked.deleted_at is not None:
        raise NotFound("Thread not found")
    if await uow.session.get(ThreadParticipant, (locked.id, actor.id)) is not None:
        return locked
    await _join(uow, actor, locked, actor.id, ThreadRole.OWNER)
    await uow.session.refresh(locked, ["last_seq"])
    return locked


async def update_thread(
    uow: UnitOfWork,
    actor: User,
    thread_id: str,
    *,
    title: str | None = None,
    description: str | None = None,
    set_description: bool = False,
) -> Thread:
    access = await access_thread(uow.session, actor, thread_id, ThreadRole.ADMIN, for_update=True)
    thread = access.thread
    before = (thread.title, thread.description)
    if title is not None:
        thread.title = clean_title(title)
    if set_description:
        thread.description = clean_description(description)
    if (thread.title, thread.description) != before:
        thread.updated_at = utcnow()
        await uow.session.flush()
        payload = {
            "id": str(thread.id),
            "title": thread.title,
            "description": thread.description,
            "updated_at": thread.updated_at.isoformat(),
        }
        await append_event(uow, thread.id, EventKind.THREAD_UPDATED, payload, actor.id)
        await uow.session.refresh(thread, ["last_seq"])
    return thread


async def delete_thread(uow: UnitOfWork, actor: User, thread_id: str) -> uuid.UUID:
    access = await access_thread(uow.session, actor, thread_id, ThreadRole.OWNER, for_update=True)
    thread = access.thread
    thread.deleted_at = utcnow()
    thread.direct_key = None
    await uow.session.flush()
    await append_event(uow, thread.id, EventKind.THREAD_DELETED, {"id": str(thread.id)}, actor.id)
    members = select(ThreadParticipant.user_id).where(ThreadParticipant.thread_id == thread.id)
    for user_id in await uow.session.scalars(members):
        uow.emit(_membership(user_id, thread.id, None))
    return thread.id


async def _participant_of(
    uow: UnitOfWork, actor: User, thread_id: str, user_id: str, at_least: ThreadRole
) -> tuple[ThreadAccess, ThreadParticipant]:
    """A thread the actor may change with ``at_least``, locked, and one participant of it."""
    access = await access_thread(uow.session, actor, thread_id, at_least, for_update=True)
    key = (access.thread.id, parse_id(user_id, "User"))
    participant = await uow.session.get(ThreadParticipant, key)
    if participant is None:
        raise NotFound("Participant not found")
    return access, participant


async def _keep_an_owner(
    session: AsyncSession, participant: ThreadParticipant, change: str
) -> None:
    """A thread always has an OWNER: its last one may not leave, be removed or step down."""
    if participant.thread_role is not ThreadRole.OWNER:
        return
    owners = await count_rows(
        session,
        ThreadParticipant,
        ThreadParticipant.thread_id == participant.thread_id,
        ThreadParticipant.role == ThreadRole.OWNER.value,
    )
    if owners <= 1:
        raise Conflict(f"The last OWNER cannot {change}: make someone else OWNER first")


async def _participant_changed(
    uow: UnitOfWork, actor: User, thread: Thread, user_id: uuid.UUID, role: ThreadRole | None
) -> None:
    await append_event(
        uow,
        thread.id,
        EventKind.PARTICIPANT_CHANGED,
        {"user_id": str(user_id), "role": role.value if role else None},
        actor.id,
    )
    uow.emit(_membership(user_id, thread.id, role))


async def _join(
    uow: UnitOfWork, actor: User, thread: Thread, user_id: uuid.UUID, role: ThreadRole
) -> ThreadParticipant:
    """A fresh participant (markers at 0, the history before now not unread: ``thread``
    is locked and current), announced like any participant change."""
    participant = ThreadParticipant(  # the other columns' defaults: a fresh row
        thread_id=thread.id, user_id=user_id, role=role.value, joined_seq=thread.last_seq
    )
    uow.session.add(participant)
    await uow.session.flush()
    await _participant_changed(uow, actor, thread, user_id, role)
    return participant


def _no_grant_above(access: ThreadAccess, role: ThreadRole) -> None:
    if not thread_role_at_least(access.role, role):
        raise Forbidden("You cannot grant a role above your own")


async def add_participant(
    uow: UnitOfWork, actor: User, thread_id: str, user_id: str, role: ThreadRole
) -> ThreadParticipant:
    access = await access_thread(uow.session, actor, thread_id, ThreadRole.ADMIN, for_update=True)
    if access.thread.is_direct:
        raise Conflict("A direct thread has exactly two participants")
    _no_grant_above(access, role)
    uid = parse_id(user_id, "User")
    if not (await _live_users(uow.session, [uid])):
        raise NotFound("User not found")
    if await uow.session.get(ThreadParticipant, (access.thread.id, uid)) is not None:
        raise Conflict("Already a participant: use setParticipantRole to change the role")
    participant = await _join(uow, actor, access.thread, uid, role)
    await notifications.notify_added(uow, actor, access.thread, [uid])
    return participant


async def remove_participant(
    uow: UnitOfWork, actor: User, thread_id: str, user_id: str
) -> uuid.UUID:
    access, participant = await _participant_of(uow, actor, thread_id, user_id, ThreadRole.ADMIN)
    uid = participant.user_id
    if uid != actor.id:
        if access.thread.is_direct:
            # createDirectThread lets someone who left come back, which would undo a removal.
            raise Conflict("A direct thread's members can only leave it")
        _no_grant_above(access, participant.thread_role)
    await _drop(uow, actor, access.thread, participant)
    return uid


async def _drop(
    uow: UnitOfWork, actor: User, thread: Thread, participant: ThreadParticipant
) -> None:
    await _keep_an_owner(uow.session, participant, "leave")
    user_id = participant.user_id
    await uow.session.delete(participant)
    await uow.session.flush()
    await _participant_changed(uow, actor, thread, user_id, None)


async def leave_thread(uow: UnitOfWork, actor: User, thread_id: str) -> uuid.UUID:
    access = await access_thread(uow.session, actor, thread_id, ThreadRole.MEMBER, for_update=True)
    if access.participant is None:
        raise NotFound("Participant not found")
    await _drop(uow, actor, access.thread, access.participant)
    return access.thread.id


async def set_participant_role(
    uow: UnitOfWork, actor: User, thread_id: str, user_id: str, role: ThreadRole
) -> ThreadParticipant:
    access, participant = await _participant_of(uow, actor, thread_id, user_id, ThreadRole.OWNER)
    if participant.thread_role is role:
        return participant
    await _keep_an_owner(uow.session, participant, "be demoted")
    participant.role = role.value
    await uow.session.flush()
    await _participant_changed(uow, actor, access.thread, participant.user_id, role)
    return participant


async def mute_thread(uow: UnitOfWork, actor: User, thread_id: str, muted: bool) -> Thread:
    # Locked as a removal locks it: the row to update cannot vanish under the UPDATE.
    access = await access_thread(uow.session, actor, thread_id, ThreadRole.MEMBER, for_update=True)
    if access.participant is None:
        raise Conflict("Only participants can mute a thread")
    access.participant.muted = muted
    await uow.session.flush()
    return access.thread


# The thread list's statement in each shape (a search, a cursor), built once.
_THREADS_BASE = (
    select(Thread, ThreadParticipant)
    .join(ThreadParticipant, ThreadParticipant.thread_id == Thread.id)
    .where(ThreadParticipant.user_id == bindparam("user_id"), Thread.deleted_at.is_(None))
)


@functools.cache
def _threads_page(search: bool, after: bool) -> Query:
    query = _THREADS_BASE
    if search:
        query = query.where(contains_text(Thread.title, bindparam("pattern")))
    if after:
        query = query.where(
            or_(
                Thread.last_activity_at < bindparam("at"),
                (Thread.last_activity_at == bindparam("at")) & (Thread.id < bindparam("after_id")),
            )
        )
    order = (Thread.last_activity_at.desc(), Thread.id.desc())
    return Query(query.order_by(*order).limit(bindparam("size")))


for _shape in itertools.product((False, True), repeat=2):
    _threads_page(*_shape)


async def threads_of(
    session: AsyncSession, actor: User, search: str | None, request: PageRequest
) -> Page[ThreadAccess]:
    """The actor's threads, most recently active first, with the actor's access to each
    (read in the same statement, so the page's fields need no check of their own)."""
    after = request.forwards_key("Threads page")
    params: dict[str, Any] = {"user_id": actor.id, "size": request.size + 1}
    search = clean_search(search)
    if search:
        params["pattern"] = contains_pattern(search)
    if after is not None:
        params["at"], params["after_id"] = time_id_key(after)
    query = _threads_page(bool(search), after is not None)
    found = (grant(actor, thread, mine) for thread, mine in await query.tuples(session, **params))
    rows = [access for access in found if access is not None]
    return make_page(
        rows, request, lambda a: [a.thread.last_activity_at.isoformat(), str(a.thread.id)]
    )


async def participants_page(
    session: AsyncSession, thread_id: uuid.UUID, request: PageRequest
) -> tuple[Page[ThreadParticipant], int]:
    after = request.forwards_key("Participants page")
    query = select(ThreadParticipant).where(ThreadParticipant.thread_id == thread_id)
    if after is not None:
        query = query.where(ThreadParticipant.user_id > id_key(after))
    rows = list(
        await session.scalars(query.order_by(ThreadParticipant.user_id).limit(request.size + 1))
    )
    total = await count_rows(session, ThreadParticipant, ThreadParticipant.thread_id == thread_id)
    return make_page(rows, request, lambda p: [str(p.user_id)]), total


_THREADS_BY_IDS = Query(select(Thread).where(Thread.id.in_(bindparam("ids", expanding=True))))


async def get_thread(session: AsyncSession, thread_id: uuid.UUID) -> Thread:
    thread = (await threads_by_ids(session, [thread_id])).get(thread_id)
    if thread is None or thread.deleted_at is not None:
        raise NotFound("Thread not found")
    return thread


async def threads_by_ids(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Thread]:
    rows = await _THREADS_BY_IDS.scalars(session, ids=list(set(ids)))
    return {t.id: t for t in rows}


async def participations(
    session: AsyncSession, user_id: uuid.UUID, thread_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, ThreadParticipant]:
    rows = await session.scalars(
        select(ThreadParticipant).where(
            ThreadParticipant.user_id == user_id, ThreadParticipant.thread_id.in_(set(thread_ids))
        )
    )
    return {p.thread_id: p for p in rows}
