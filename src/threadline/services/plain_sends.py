"""Plain messages on PostgreSQL, stored by one statement for many concurrent sends.

A plain message has no parent, attachments or mentions: the common send. Sends
that arrive while a batch is being stored go together in the next (see
``batching``), so under load a send costs a share of one round trip, one pooled
connection and one commit instead of each of its own.

The statement locks the threads it writes to, in id order (two batches, of this
process or another, never wait on each other in a circle), checks each sender's
right to post under that lock, numbers each thread's new messages from the seq
it found, and writes the messages, their events and the threads' seq and
activity, all or nothing. A row that may not be stored (a thread gone, a sender
who may not post) is left out and answered None: the general path then says
why. A clientId that exists already makes the whole statement fail on the
unique key, storing nothing (so no seq is skipped): every row of that batch is
then answered None and takes the general path, which returns the first message.
Any other failure of the statement stores nothing either, and the batcher runs
each send of it alone, so that one send's failure never fails another's. Input is
validated before a send joins a batch (``messages.send_message``).
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from threadline.batching import Batcher
from threadline.db import Database
from threadline.services.events import EventKind

# One statement's rows; a larger queue is stored by several statements in turn.
MAX_BATCH = 100


@dataclass(frozen=True, slots=True)
class PlainSend:
    id: uuid.UUID
    thread_id: uuid.UUID
    author_id: uuid.UUID
    body: str
    client_id: str | None
    at: datetime
    # The sender's system role grants MEMBER in every thread (no participant row needed).
    granted: bool
    # The event's payload as JSON text, without its seq (the statement adds it).
    payload: str


_STORE = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                         $6::timestamptz[], $7::bool[], $8::text[])
        WITH ORDINALITY AS i(id, thread_id, author_id, body, client_id, at, granted,
                             payload, n)
), locked AS (
    SELECT t.id, t.last_seq FROM threads t
    WHERE t.id IN (SELECT thread_id FROM input) AND t.deleted_at IS NULL
    ORDER BY t.id
    FOR UPDATE
), allowed AS (
    SELECT i.*, l.last_seq + row_number() OVER (PARTITION BY i.thread_id ORDER BY i.n) AS seq
    FROM input i JOIN locked l ON l.id = i.thread_id
    WHERE i.granted OR EXISTS (SELECT 1 FROM thread_participants p
                               WHERE p.thread_id = i.thread_id AND p.user_id = i.author_id)
), stored AS (
    INSERT INTO messages (id, thread_id, seq, author_id, body, client_id, parent_id,
                          mention_ids, pinned, created_at)
    SELECT id, thread_id, seq, author_id, body, client_id, NULL, '[]', false, at FROM allowed
), bumped AS (
    UPDATE threads SET last_seq = last.seq, last_message_at = last.at,
                       last_activity_at = last.at
    FROM (SELECT DISTINCT ON (thread_id) thread_id, seq, at FROM allowed
          ORDER BY thread_id, seq DESC) last
    WHERE threads.id = last.thread_id
), logged AS (
    INSERT INTO thread_events (thread_id, seq, kind, payload, actor_id, at)
    SELECT thread_id, seq, $9, payload::jsonb || jsonb_build_object('seq', seq),
           author_id, at
    FROM allowed
)
SELECT n, seq FROM allowed
"""


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
        try:
            async with self._db.driver_connection("send_message") as conn:
                stored = await conn.fetch(
                    _STORE,
                    [s.id for s in batch],
                    [s.thread_id for s in batch],
                    [s.author_id for s in batch],
                    [s.body for s in batch],
                    [s.client_id for s in batch],
                    [s.at for s in batch],
                    [s.granted for s in batch],
                    [s.payload for s in batch],
                    EventKind.MESSAGE_CREATED.value,
                )
        except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
            return answers
        for n, seq in stored:
            answers[rows[n - 1]] = seq
        return answers


_BY_DATABASE: weakref.WeakKeyDictionary[Database, PlainSends] = weakref.WeakKeyDictionary()


def plain_sends(db: Database) -> PlainSends:
    """The database's batcher of plain sends (one per process and database)."""
    sends = _BY_DATABASE.get(db)
    if sends is None:
        sends = _BY_DATABASE[db] = PlainSends(db)
    return sends
