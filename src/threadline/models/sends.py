"""The group-commit statement: many plain messages stored by one PostgreSQL statement.

It locks its threads in id order (so two batches never wait on each other in a
circle), then its senders' participant rows, keeps the rows whose sender may post
(checked against the rights each row carries, from ``permissions.posting_rights``,
and a live thread, as ``permissions.grant`` does), numbers each thread's new messages
from the seq it found, and writes the messages, their events and the threads' seq,
all or nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, distinct_on
from sqlalchemy.types import TypeEngine

from threadline.db import Database
from threadline.models.base import UTCDateTime
from threadline.models.event import ThreadEvent
from threadline.models.message import Message
from threadline.models.queries import DriverStatement
from threadline.models.thread import Thread, ThreadParticipant


class PlainSend(NamedTuple):
    """One plain message (no parent, attachments or mentions), fields in ``_FIELDS``' order."""

    id: uuid.UUID
    thread_id: uuid.UUID
    author_id: uuid.UUID
    body: str
    client_id: str | None
    at: datetime
    # The sender's rights (permissions.posting_rights): without a participant row; by role.
    granted: bool
    roles: frozenset[str]
    # The event's payload as JSON text, without its seq (the statement adds it).
    payload: str


# (array parameter, column, type) of each of PlainSend's fields, in its order.
_FIELDS: list[tuple[str, str, TypeEngine[Any]]] = [
    ("ids", "id", sa.Uuid()),
    ("thread_ids", "thread_id", sa.Uuid()),
    ("author_ids", "author_id", sa.Uuid()),
    ("bodies", "body", sa.Text()),
    ("client_ids", "client_id", sa.Text()),
    ("ats", "at", UTCDateTime()),
    ("granted", "granted", sa.Boolean()),
    ("roles", "roles", sa.Text()),
    ("payloads", "payload", sa.Text()),
]
# unnest(...) WITH ORDINALITY: a row per send, with its position n.
_rows = sa.func.unnest(*(sa.bindparam(p, type_=ARRAY(t)) for p, _, t in _FIELDS))
_sent = _rows.table_valued(*(sa.column(c, t) for _, c, t in _FIELDS), with_ordinality="n")
_input = sa.select(_sent.render_derived("i")).cte("input")
_locked = (
    sa.select(Thread.id, Thread.last_seq)
    .where(Thread.id.in_(sa.select(_input.c.thread_id)), Thread.deleted_at.is_(None))
    .order_by(Thread.id)
    # NO KEY UPDATE, as the general path's lock: a row being added under the thread
    # (an upload, a participant) holds KEY SHARE on it, which this need not wait for.
    .with_for_update(key_share=True)
    .cte("locked")
)
# The senders' participant rows, locked once their threads are (the join waits for
# those): the lock skips a row that a removal committed meanwhile deleted, which the
# statement's snapshot, taken before the wait, still shows.
_member = (
    sa.select(ThreadParticipant.thread_id, ThreadParticipant.user_id, ThreadParticipant.role)
    .join(_locked, _locked.c.id == ThreadParticipant.thread_id)
    .where(
        sa.tuple_(ThreadParticipant.thread_id, ThreadParticipant.user_id).in_(
            sa.select(_input.c.thread_id, _input.c.author_id)
        )
    )
    .with_for_update(read=True, key_share=True, of=ThreadParticipant)
    .cte("member")
)
_roles = sa.func.string_to_array(_input.c.roles, sa.literal_column("','"))
_may_post = _input.c.granted | sa.exists().where(
    _member.c.thread_id == _input.c.thread_id,
    _member.c.user_id == _input.c.author_id,
    _member.c.role == sa.any_(_roles),
)
_order = sa.func.row_number().over(partition_by=_input.c.thread_id, order_by=_input.c.n)
_allowed = (
    sa.select(_input, (_locked.c.last_seq + _order).label("seq"))
    .join(_locked, _locked.c.id == _input.c.thread_id)
    .where(_may_post)
    .cte("allowed")
)
_new = _allowed.c
_copied = ["id", "thread_id", "seq", "author_id", "body", "client_id"]
_stored = sa.insert(Message).from_select(
    [*_copied, "parent_id", "mention_ids", "pinned", "created_at"],
    sa.select(
        *(_new[c] for c in _copied), sa.null(), sa.literal_column("'[]'"), sa.false(), _new.at
    ),
)
_last = (
    sa.select(_new.thread_id, _new.seq, _new.at)
    .ext(distinct_on(_new.thread_id))
    .order_by(_new.thread_id, _new.seq.desc())
    .subquery("last")
)
_bumped = (
    sa.update(Thread)
    .where(Thread.id == _last.c.thread_id)
    .values(last_seq=_last.c.seq, last_message_at=_last.c.at, last_activity_at=_last.c.at)
)
_with_seq = sa.func.jsonb_build_object(sa.literal_column("'seq'"), _new.seq)
_event = sa.cast(_new.payload, JSONB).op("||")(_with_seq)
_kind = sa.bindparam("kind", type_=sa.Text())
_logged = sa.insert(ThreadEvent).from_select(
    ["thread_id", "seq", "kind", "payload", "actor_id", "at"],
    sa.select(_new.thread_id, _new.seq, _kind, _event, _new.author_id, _new.at),
)
_ctes = (_stored.cte("stored"), _bumped.cte("bumped"), _logged.cte("logged"))
_PARAMETERS = [p for p, _, _ in _FIELDS]
assert [c for _, c, _ in _FIELDS] == list(PlainSend._fields)
STORE = DriverStatement(sa.select(_new.n, _new.seq).add_cte(*_ctes))


@cache  # a handful of role sets, one per system role
def _roles_text(roles: frozenset[str]) -> str:
    return ",".join(sorted(roles))


async def store_plain_sends(db: Database, sends: Sequence[PlainSend], kind: str) -> dict[int, int]:
    """Store what may be stored of ``sends``: {position in ``sends``: its seq}.

    A row left out (thread gone, sender may not post) is absent. A clientId that
    exists already fails the whole statement on the unique key, as a deadlock does:
    nothing is stored and the answer is empty.
    """
    if not sends:
        return {}
    # A column of values per field, in one pass (sends are tuples in _FIELDS' order).
    params: dict[str, Any] = dict(zip(_PARAMETERS, zip(*sends, strict=True), strict=True))
    params["roles"] = [_roles_text(roles) for roles in params["roles"]]
    args = STORE.args({**params, "kind": kind})
    try:
        async with db.driver_connection("send_message") as conn:
            stored = await conn.fetch(STORE.sql, *args)
    except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
        return {}
    return {n - 1: seq for n, seq in stored}
