"""Messages: sending (idempotent by clientId), replies, edits, deletion, pins, reactions.
Each write records its thread event in the same transaction; on PostgreSQL a plain
message is stored by a statement shared with concurrent sends (``plain_sends``)."""

from __future__ import annotations

import functools
import itertools
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import orjson
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from threadline.db import Database, UnitOfWork, count_rows, dialect_insert, rowcount
from threadline.errors import BadInput, Conflict, Forbidden, NotFound
from threadline.models import (
    Attachment,
    Message,
    MessageEdit,
    Reaction,
    Thread,
    ThreadParticipant,
    ThreadRole,
    User,
    utcnow,
)
from threadline.models.queries import Query
from threadline.models.sends import PlainSend
from threadline.services import notifications
from threadline.services.events import (
    EventKind,
    LoggedEvent,
    allocate_seq,
    append_event,
    events_after,
    message_payload,
)
from threadline.services.pagination import Page, PageRequest, int_key, make_page
from threadline.services.permissions import (
    ThreadAccess,
    access_message,
    access_thread,
    parse_id,
    posting_rights,
)
from threadline.services.plain_sends import plain_sends
from threadline.services.text_rules import (
    MAX_DISTINCT_REACTIONS,
    check_client_id,
    check_emoji,
    clean_body,
    mentioned_usernames,
    name_readings,
)

MAX_ATTACHMENTS = 10
REACTION_USERS_SHOWN = 20
# Every list a message or thread shows is bounded here, and the query cost model counts
# each at its bound (schema/query_cost.py): no cheap-looking document fans out.
MAX_PINNED = 50  # per thread; pinning one more is a CONFLICT (Slack allows 100)
EDITS_SHOWN = 50  # Message.edits: the newest ones; older stay stored
MAX_MENTIONS = 50  # distinct users one message may mention

_Row = TypeVar("_Row")


class _DuplicateClientId(Exception):
    """Another transaction stored this clientId first; retry to return its message."""


@dataclass
class ReactionGroup:
    emoji: str
    count: int = 0
    first_user_ids: list[uuid.UUID] = field(default_factory=list)
    user_ids: set[uuid.UUID] = field(default_factory=set)


def mention_uuids(message: Message) -> list[uuid.UUID]:
    return [uuid.UUID(m) for m in (message.mention_ids or [])[:MAX_MENTIONS]]


async def _mentions(
    session: AsyncSession, thread_id: uuid.UUID, body: str
) -> list[tuple[uuid.UUID, bool]]:
    """(user id, muted) of participants the body @-mentions, in order; of the names a
    mention may be ("@bob谢谢": bob谢谢, bob谢, bob), the longest a participant has."""
    readings = [[n.lower() for n in name_readings(name)] for name in mentioned_usernames(body)]
    if not readings:
        return []
    username = func.lower(User.username)
    rows = await session.execute(
        select(username, User.id, ThreadParticipant.muted)
        .join(ThreadParticipant, ThreadParticipant.user_id == User.id)
        .where(
            ThreadParticipant.thread_id == thread_id,
            username.in_({n for names in readings for n in names}),
            User.deleted_at.is_(None),
        )
    )
    named: dict[str, list[tuple[uuid.UUID, bool]]] = {}
    for name, user_id, muted in rows:
        named.setdefault(name, []).append((user_id, bool(muted)))
    found: dict[uuid.UUID, bool] = {}
    for names in readings:
        found.update(next((named[n] for n in names if n in named), []))
    if len(found) > MAX_MENTIONS:
        raise BadInput(f"A message may mention at most {MAX_MENTIONS} people")
    return list(found.items())


async def send_message(
    db: Database,
    actor: User,
    thread_id: str | uuid.UUID,
    body: str,
    *,
    parent_id: str | None = None,
    client_id: str | None = None,
    attachment_ids: Sequence[str] = (),
) -> Message:
    """Store a message, or return the first one sent with the same clientId. Access is
    checked inside the write, so a participant removed meanwhile cannot slip through; a
    retry that loses the clientId race rolls back (its seq too: no gap) and finds the
    winner's message."""
    tid = parse_id(thread_id, "Thread")
    if client_id is not None:  # checked once, for either path, before anything is batched
        client_id = check_client_id(client_id)
    if db.fast_paths and parent_id is None and not attachment_ids:
        message = await _send_plain(db, actor, tid, body, client_id)
        if message is not None:
            return message
    for _ in range(3):
        try:
            async with db.transaction("send_message") as uow:
                access = await access_thread(uow.session, actor, tid, for_update=True)
                return await _write_message(
                    uow, actor, access, body, parent_id, client_id, attachment_ids
                )
        except _DuplicateClientId:
            continue
    raise Conflict("clientId is being used by a concurrent send; retry")


async def _send_plain(
    db: Database, actor: User, thread_id: uuid.UUID, body: str, client_id: str | None
) -> Message | None:
    """A message without parent, attachments or mentions (see plain_sends); None when
    it stored nothing or the message needs the general path."""
    try:
        text = clean_body(body, has_attachments=False)
    except BadInput:  # the general path checks access and the clientId before the body
        return None
    if mentioned_usernames(text):  # mentions notify: the general path handles them
        return None
    now = utcnow()
    message = Message.as_stored(
        id=uuid.uuid4(),
        thread_id=thread_id,
        seq=0,
        author_id=actor.id,
        body=text,
        client_id=client_id,
        parent_id=None,
        mention_ids=[],
        pinned=False,
        pinned_at=None,
        created_at=now,
        edited_at=None,
        deleted_at=None,
    )
    payload = message_payload(message)
    del payload["seq"]  # the statement fills it in
    granted, roles = posting_rights(actor.system_role)
    seq = await plain_sends(db).submit(
        PlainSend(
            id=message.id,
            thread_id=thread_id,
            author_id=actor.id,
            body=text,
            client_id=client_id,
            at=now,
            granted=granted,
            roles=roles,
            payload=orjson.dumps(payload).decode(),
        )
    )
    if seq is None:
        return None
    message.seq = payload["seq"] = seq
    await db.publish_committed(
        "send_message",
        [LoggedEvent(message.thread_id, seq, EventKind.MESSAGE_CREATED, payload, actor.id, now)],
    )
    return message


async def _write_message(
    uow: UnitOfWork,
    actor: User,
    access: ThreadAccess,
    body: str,
    parent_id: str | None,
    client_id: str | None,
    attachment_ids: Sequence[str],
) -> Message:
    session = uow.session
    thread_id = access.thread.id
    if client_id is not None:
        existing = await session.scalar(
            select(Message).where(
                Message.thread_id == thread_id,
                Message.author_id == actor.id,
                Message.client_id == client_id,
            )
        )
        if existing is not None:
            # Its sender's process may have died before publishing it (readers drop repeats).
            uow.events += await events_after(session, thread_id, existing.seq - 1, 1)
            return existing
    attachment_uuids = list(dict.fromkeys(parse_id(a, "Attachment") for a in attachment_ids))
    if len(attachment_uuids) > MAX_ATTACHMENTS:
        raise BadInput(f"At most {MAX_ATTACHMENTS} attachments per message")
    text = clean_body(body, has_attachments=bool(attachment_uuids))
    parent: Message | None = None
    if parent_id is not None:
        parent = await session.get(Message, parse_id(parent_id, "Message"))
        if parent is None or parent.thread_id != thread_id:
            raise NotFound("Parent message not found")
        if parent.deleted_at is not None:
            raise Conflict("Cannot reply to a deleted message")
    if attachment_uuids:
        await _check_attachments(session, actor, thread_id, attachment_uuids)
    mentioned = await _mentions(session, thread_id, text)

    now = utcnow()
    seq = await allocate_seq(session, thread_id, message_at=now)
    values = {
        "id": uuid.uuid4(),
        "thread_id": thread_id,
        "seq": seq,
        "author_id": actor.id,
        "body": text,
        "client_id": client_id,
        "parent_id": parent.id if parent else None,
        "mention_ids": [str(uid) for uid, _ in mentioned],
        "pinned": False,
        "created_at": now,
    }
    statement = dialect_insert(session, Message).values(**values)
    if client_id is not None:
        statement = statement.on_conflict_do_nothing(
            index_elements=["thread_id", "author_id", "client_id"]
        )
    inserted = (await session.execute(statement.returning(Message.id))).first()
    if inserted is None:
        raise _DuplicateClientId
    message = Message(**values, edited_at=None, deleted_at=None)
    if attachment_uuids:
        claimed = await session.execute(
            update(Attachment)
            .where(Attachment.id.in_(attachment_uuids), Attachment.message_id.is_(None))
            .values(message_id=message.id)
        )
        # The clean-up may have swept an unused upload since the check above (this
        # update waited for its lock): refuse the message rather than lose the file.
        if rowcount(claimed) != len(attachment_uuids):
            raise NotFound("Attachment not found (unused uploads expire after 24 hours)")
    await append_event(
        uow,
        thread_id,
        EventKind.MESSAGE_CREATED,
        message_payload(message),
        actor.id,
        seq=seq,
        at=now,
    )
    await notifications.notify_message(uow, actor, message, parent, mentioned)
    return message


async def _check_attachments(
    session: AsyncSession, actor: User, thread_id: uuid.UUID, ids: list[uuid.UUID]
) -> None:
    rows = list(await session.scalars(select(Attachment).where(Attachment.id.in_(ids))))
    found = {a.id: a for a in rows}
    for aid in ids:
        a = found.get(aid)
        if a is None or a.uploaded_by_id != actor.id or a.thread_id != thread_id:
            raise NotFound("Attachment not found", attachmentId=str(aid))
        if a.message_id is not None:
            raise Conflict("Attachment already used by another message", attachmentId=str(aid))


async def edit_message(uow: UnitOfWork, actor: User, message_id: str, body: str) -> Message:
    message, _ = await access_message(uow.session, actor, message_id, for_update=True)
    if message.author_id != actor.id:
        raise Forbidden("Only the author may edit a message")
    if message.deleted_at is not None:
        raise Conflict("A deleted message cannot be edited")
    attached = await count_rows(uow.session, Attachment, Attachment.message_id == message.id)
    text = clean_body(body, has_attachments=attached > 0)
    if text == message.body:
        return message
    now = utcnow()
    uow.session.add(
        MessageEdit(
            message_id=message.id, previous_body=message.body, edited_by_id=actor.id, edited_at=now
        )
    )
    message.body = text
    message.edited_at = now
    mentioned = await _mentions(uow.session, message.thread_id, text)
    # Only a mention the edit adds may notify: one the message kept was dealt with.
    added = [m for m in mentioned if str(m[0]) not in (message.mention_ids or [])]
    message.mention_ids = [str(uid) for uid, _ in mentioned]
    await uow.session.flush()
    await append_event(
        uow, message.thread_id, EventKind.MESSAGE_EDITED, message_payload(message), actor.id
    )
    await notifications.notify_edit(uow, actor, message, added)
    return message


async def delete_message(uow: UnitOfWork, actor: User, message_id: str) -> Message:
    message, access = await access_message(uow.session, actor, message_id, for_update=True)
    if message.author_id != actor.id and not access.at_least(ThreadRole.ADMIN):
        raise Forbidden("Only the author or a thread ADMIN may delete a message")
    if message.deleted_at is not None:
        return message
    message.deleted_at = utcnow()
    message.body = ""
    message.mention_ids = []
    message.pinned = False
    message.pinned_at = None
    await uow.session.flush()
    await append_event(
        uow, message.thread_id, EventKind.MESSAGE_DELETED, {"message_id": str(message.id)}, actor.id
    )
    return message


async def pin_message(uow: UnitOfWork, actor: User, message_id: str, pinned: bool) -> Message:
    message, _ = await access_message(
        uow.session, actor, message_id, ThreadRole.ADMIN, for_update=True
    )
    if message.deleted_at is not None:
        raise Conflict("A deleted message cannot be pinned")
    if message.pinned == pinned:
        return message
    # The seq's UPDATE locks the thread row first: concurrent pins count one at a time.
    seq = await allocate_seq(uow.session, message.thread_id)
    if pinned:
        count = await count_rows(
            uow.session, Message, Message.thread_id == message.thread_id, Message.pinned.is_(True)
        )
        if count >= MAX_PINNED:
            raise Conflict(
                f"A thread has at most {MAX_PINNED} pinned messages: unpin one first",
                maxPinned=MAX_PINNED,
            )
    message.pinned = pinned
    message.pinned_at = utcnow() if pinned else None
    await uow.session.flush()
    await append_event(
        uow,
        message.thread_id,
        EventKind.MESSAGE_PINNED,
        {"message": message_payload(message), "pinned": pinned},
        actor.id,
        seq=seq,
    )
    return message


async def _reactable(uow: UnitOfWork, actor: User, message_id: str) -> Message:
    message, _ = await access_message(uow.session, actor, message_id, for_update=True)
    if message.deleted_at is not None:
        raise Conflict("A deleted message takes no reactions")
    return message


async def add_reaction(uow: UnitOfWork, actor: User, message_id: str, emoji: str) -> Message:
    emoji = check_emoji(emoji)
    message = await _reactable(uow, actor, message_id)
    session = uow.session
    kinds = set(
        await session.scalars(
            select(Reaction.emoji).where(Reaction.message_id == message.id).distinct()
        )
    )
    if emoji not in kinds and len(kinds) >= MAX_DISTINCT_REACTIONS:
        raise BadInput(f"At most {MAX_DISTINCT_REACTIONS} different emoji per message")
    statement = (
        dialect_insert(session, Reaction)
        .values(
            id=uuid.uuid4(),
            message_id=message.id,
            user_id=actor.id,
            emoji=emoji,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["message_id", "user_id", "emoji"])
        .returning(Reaction.id)
    )
    if (await session.execute(statement)).first() is not None:
        await _reaction_changed(uow, actor, message, emoji, added=True)
        await notifications.notify_reaction(uow, actor, message)
    return message


async def remove_reaction(uow: UnitOfWork, actor: User, message_id: str, emoji: str) -> Message:
    emoji = check_emoji(emoji)
    message = await _reactable(uow, actor, message_id)
    result = await uow.session.execute(
        delete(Reaction)
        .where(
            Reaction.message_id == message.id,
            Reaction.user_id == actor.id,
            Reaction.emoji == emoji,
        )
        .returning(Reaction.id)
    )
    if result.first() is not None:
        await _reaction_changed(uow, actor, message, emoji, added=False)
    return message


async def _reaction_changed(
    uow: UnitOfWork, actor: User, message: Message, emoji: str, *, added: bool
) -> None:
    groups = (await reaction_groups(uow.session, [message.id])).get(message.id, [])
    reactions = [
        {
            "emoji": g.emoji,
            "count": g.count,
            "first_user_ids": [str(u) for u in g.first_user_ids],
            "user_ids": [str(u) for u in g.user_ids],
        }
        for g in groups
    ]
    await append_event(
        uow,
        message.thread_id,
        EventKind.REACTION_CHANGED,
        {"message_id": str(message.id), "emoji": emoji, "added": added, "reactions": reactions},
        actor.id,
    )


# Pages by seq of a thread's messages or a message's replies: each shape (cursors,
# direction) is a statement built once, at import (see models.queries).
@functools.cache
def _seq_page(replies: bool, after: bool, before: bool, backwards: bool) -> Query:
    query = select(Message).where(Message.thread_id == bindparam("thread_id"))
    if replies:
        query = query.where(Message.parent_id == bindparam("parent_id"))
    if after:
        query = query.where(Message.seq > bindparam("after"))
    if before:
        query = query.where(Message.seq < bindparam("before"))
    order = Message.seq.desc() if backwards else Message.seq.asc()
    return Query(query.order_by(order).limit(bindparam("size")))


for _shape in itertools.product((False, True), repeat=4):
    _seq_page(*_shape)


async def _page_by_seq(
    session: AsyncSession, params: dict[str, Any], request: PageRequest
) -> Page[Message]:
    after, before = int_key(request.after_key()), int_key(request.before_key())
    replies = "parent_id" in params
    query = _seq_page(replies, after is not None, before is not None, request.backwards)
    # A shape without a cursor has no parameter for it: the None is ignored.
    values = {**params, "size": request.size + 1, "after": after, "before": before}
    rows: list[Message] = await query.scalars(session, **values)
    return make_page(rows, request, lambda m: [m.seq])


async def thread_messages(
    session: AsyncSession, thread_id: uuid.UUID, request: PageRequest
) -> Page[Message]:
    return await _page_by_seq(session, {"thread_id": thread_id}, request)


async def replies(session: AsyncSession, parent: Message, request: PageRequest) -> Page[Message]:
    params = {"thread_id": parent.thread_id, "parent_id": parent.id}
    return await _page_by_seq(session, params, request)


async def get_message(session: AsyncSession, message_id: uuid.UUID) -> Message:
    if (message := await session.get(Message, message_id)) is None:
        raise NotFound("Message not found")
    return message


# The batch reads a page makes, built once: no statement or cache key per request.
_MESSAGES_BY_IDS = Query(select(Message).where(Message.id.in_(bindparam("ids", expanding=True))))
_REPLY_COUNTS = Query(
    select(Message.parent_id, func.count())
    .where(Message.parent_id.in_(bindparam("ids", expanding=True)), Message.deleted_at.is_(None))
    .group_by(Message.parent_id)
)
_REACTIONS = Query(
    select(Reaction.message_id, Reaction.emoji, Reaction.user_id)
    .where(Reaction.message_id.in_(bindparam("ids", expanding=True)))
    .order_by(Reaction.message_id, Reaction.created_at, Reaction.id)
)
# Each message's newest EDITS_SHOWN edits, by rank within the message.
_NEWEST_EDITS = (
    select(
        MessageEdit.id,
        func.row_number()
        .over(
            partition_by=MessageEdit.message_id,
            order_by=(MessageEdit.edited_at.desc(), MessageEdit.id.desc()),
        )
        .label("newness"),
    )
    .where(MessageEdit.message_id.in_(bindparam("ids", expanding=True)))
    .subquery()
)
_EDITS = Query(
    select(MessageEdit)
    .where(
        MessageEdit.id.in_(select(_NEWEST_EDITS.c.id).where(_NEWEST_EDITS.c.newness <= EDITS_SHOWN))
    )
    .order_by(MessageEdit.message_id, MessageEdit.edited_at, MessageEdit.id)
)
_ATTACHMENTS = Query(
    select(Attachment)
    .where(Attachment.message_id.in_(bindparam("ids", expanding=True)))
    .order_by(Attachment.created_at, Attachment.id)
)


async def messages_by_ids(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Message]:
    rows = await _MESSAGES_BY_IDS.scalars(session, ids=list(set(ids)))
    return {m.id: m for m in rows}


async def reply_counts(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = await _REPLY_COUNTS.tuples(session, ids=list(set(ids)))
    return {r[0]: int(r[1]) for r in rows if r[0] is not None}


async def reaction_groups(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[ReactionGroup]]:
    """Reactions grouped by emoji in order of first use; user ids only (the caller
    loads the few people who react on a page once, not once per reaction row)."""
    grouped: dict[uuid.UUID, dict[str, ReactionGroup]] = defaultdict(dict)
    rows = await _REACTIONS.tuples(session, ids=list(set(ids)))
    for message_id, emoji, user_id in rows:
        group = grouped[message_id].setdefault(emoji, ReactionGroup(emoji))
        group.count += 1
        group.user_ids.add(user_id)
        if len(group.first_user_ids) < REACTION_USERS_SHOWN:
            group.first_user_ids.append(user_id)
    return {mid: list(groups.values()) for mid, groups in grouped.items()}


async def edits_of(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[MessageEdit]]:
    rows: list[MessageEdit] = await _EDITS.scalars(session, ids=list(set(ids)))
    return _grouped(rows, lambda edit: edit.message_id)


async def attachments_of(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Attachment]]:
    rows: list[Attachment] = await _ATTACHMENTS.scalars(session, ids=list(set(ids)))
    # Attached ones only: the statement reads them by message id.
    return _grouped(rows, lambda attachment: cast(uuid.UUID, attachment.message_id))


# Each thread's newest live message: its (thread, seq) index walked backwards to the
# first live one. Built once: the alias costs more to build than the query to run.
_CANDIDATE = aliased(Message)
_NEWEST_ID = (
    select(_CANDIDATE.id)
    .where(_CANDIDATE.thread_id == Thread.id, _CANDIDATE.deleted_at.is_(None))
    .order_by(_CANDIDATE.seq.desc())
    .limit(1)
    .correlate(Thread)
    .scalar_subquery()
)
_LAST_MESSAGES = Query(
    select(Message).where(
        Message.id.in_(select(_NEWEST_ID).where(Thread.id.in_(bindparam("ids", expanding=True))))
    )
)


async def last_messages(
    session: AsyncSession, thread_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Message]:
    rows = await _LAST_MESSAGES.scalars(session, ids=list(set(thread_ids)))
    return {m.thread_id: m for m in rows}


async def pinned_of(
    session: AsyncSession, thread_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Message]]:
    # At most MAX_PINNED per thread even if older data holds more.
    newest = (
        select(
            Message,
            func.row_number()
            .over(
                partition_by=Message.thread_id,
                order_by=(Message.pinned_at.desc(), Message.seq.desc()),
            )
            .label("newness"),
        )
        .where(Message.thread_id.in_(set(thread_ids)), Message.pinned.is_(True))
        .subquery()
    )
    pinned = aliased(Message, newest)
    rows = await session.scalars(
        select(pinned)
        .where(newest.c.newness <= MAX_PINNED)
        .order_by(pinned.pinned_at.desc(), pinned.seq.desc())
    )
    return _grouped(rows, lambda m: m.thread_id)


def _grouped(rows: Iterable[_Row], key: Callable[[_Row], uuid.UUID]) -> dict[uuid.UUID, list[_Row]]:
    """Rows by the id they belong to (a message's, a thread's), in the order read."""
    out: dict[uuid.UUID, list[_Row]] = defaultdict(list)
    for row in rows:
        out[key(row)].append(row)
    return out
