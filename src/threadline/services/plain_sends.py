"""Plain messages (no parent, attachments or mentions) on PostgreSQL, stored by one
statement (``models.sends``) for the sends that arrive while a batch is being stored.
A send answered None (a thread gone, a sender who may not post, a clientId that exists
already, which stores nothing of its batch so no seq is skipped) takes the general path,
which says why or returns the first message."""

from __future__ import annotations

import functools
import uuid
import weakref
from collections.abc import Sequence

from threadline.batching import Batcher
from threadline.db import Database
from threadline.models.sends import PlainSend, store_plain_sends
from threadline.services.events import EventKind

# One statement's rows; a larger queue is stored by several statements in turn.
MAX_BATCH = 100


async def _store(db: Database, sends: Sequence[PlainSend]) -> list[int | None]:
    """Each send's seq once committed, or None when the general path must take it."""
    answers: list[int | None] = [None] * len(sends)
    # Two sends with one clientId: the first goes in this batch, the second
    # takes the general path and finds the first.
    first: dict[tuple[uuid.UUID, uuid.UUID, str] | int, int] = {}
    for index, send in enumerate(sends):
        if send.client_id is None:
            first[index] = index
        else:
            first.setdefault((send.thread_id, send.author_id, send.client_id), index)
    rows = list(first.values())
    batch = [sends[i] for i in rows]
    stored = await store_plain_sends(db, batch, EventKind.MESSAGE_CREATED.value)
    for position, seq in stored.items():
        answers[rows[position]] = seq
    return answers


_BY_DATABASE: weakref.WeakKeyDictionary[Database, Batcher[PlainSend, int | None]] = (
    weakref.WeakKeyDictionary()
)


def plain_sends(db: Database) -> Batcher[PlainSend, int | None]:
    """The database's batcher of plain sends (one per process and database)."""
    batcher = _BY_DATABASE.get(db)
    if batcher is None:
        batcher = _BY_DATABASE[db] = Batcher(
            functools.partial(_store, db), max_size=MAX_BATCH, name="threadline-plain-sends"
        )
    return batcher
