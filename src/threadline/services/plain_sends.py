"""Plain messages on PostgreSQL, stored by one statement for many concurrent sends.

A plain message has no parent, attachments or mentions: the common send. Sends
that arrive while a batch is being stored go together in the next (see
``batching``), so under load a send costs a share of one round trip, one pooled
connection and one commit instead of each of its own. The statement is storage's
(``models.sends``); the sender's rights it checks come from
``permissions.posting_rights``.

A row that may not be stored (a thread gone, a sender who may not post) is
answered None: the general path then says why. A clientId that exists already
stores nothing of its batch (so no seq is skipped): every row of that batch is
then answered None and takes the general path, which returns the first message.
Any other failure stores nothing either, and the batcher runs each send of it
alone, so that one send's failure never fails another's. Input is validated
before a send joins a batch (``messages.send_message``).
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Sequence

from threadline.batching import Batcher
from threadline.db import Database
from threadline.models.sends import PlainSend, store_plain_sends
from threadline.services.events import EventKind

__all__ = ["PlainSend", "PlainSends", "plain_sends"]

# One statement's rows; a larger queue is stored by several statements in turn.
MAX_BATCH = 100


class PlainSends:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._batcher: Batcher[PlainSend, int | None] = Batcher(
            self._store, max_size=MAX_BATCH, name="threadline-plain-sends"
        )

    async def store(self, send: PlainSend) -> int | None:
        """The message's seq once committed, or None when the general path must take it."""
        return await self._batcher.submit(send)

    async def _store(self, sends: Sequence[PlainSend]) -> list[int | None]:
        answers: list[int | None] = [None] * len(sends)
        # Two sends with one clientId: the first goes in this batch, the second
        # takes the general path and finds the first.
        seen: set[tuple[uuid.UUID, uuid.UUID, str]] = set()
        rows: list[int] = []
        for index, send in enumerate(sends):
            if send.client_id is not None:
                key = (send.thread_id, send.author_id, send.client_id)
                if key in seen:
                    continue
                seen.add(key)
            rows.append(index)
        batch = [sends[i] for i in rows]
        stored = await store_plain_sends(self._db, batch, EventKind.MESSAGE_CREATED.value)
        for position, seq in stored.items():
            answers[rows[position]] = seq
        return answers


_BY_DATABASE: weakref.WeakKeyDictionary[Database, PlainSends] = weakref.WeakKeyDictionary()


def plain_sends(db: Database) -> PlainSends:
    """The database's batcher of plain sends (one per process and database)."""
    sends = _BY_DATABASE.get(db)
    if sends is None:
        sends = _BY_DATABASE[db] = PlainSends(db)
    return sends
