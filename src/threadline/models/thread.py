"""Threads (chat rooms) and their participants with roles and receipt markers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    column,
    select,
    tuple_,
    update,
    values,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.dml import ReturningUpdate

from threadline.models.base import Base, RoleColumn, ThreadRole, id_column, id_reference, utcnow


class Thread(Base):
    __tablename__ = "threads"

    id: Mapped[uuid.UUID] = id_column()
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    is_direct: Mapped[bool] = mapped_column(Boolean, default=False)
    # "smaller-id:larger-id" for direct threads: the unique key that makes
    # createDirectThread return one thread even under concurrent calls.
    direct_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    created_by_id: Mapped[uuid.UUID | None] = id_reference("users", "SET NULL")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_message_at: Mapped[datetime | None]
    # Ordering key of "my threads": the newest message, or creation.
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # The newest event's seq; bumped under the row lock to hand out the next one.
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    deleted_at: Mapped[datetime | None]


class ThreadParticipant(Base):
    __tablename__ = "thread_participants"

    thread_id: Mapped[uuid.UUID] = id_reference("threads", "CASCADE", primary_key=True)
    user_id: Mapped[uuid.UUID] = id_reference("users", "CASCADE", primary_key=True)
    role: Mapped[str] = mapped_column(RoleColumn, default=ThreadRole.MEMBER.value)
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_read_seq: Mapped[int] = mapped_column(Integer, default=0)
    # The thread's last seq when this row was made: messages up to it are not unread.
    joined_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_delivered_seq: Mapped[int] = mapped_column(Integer, default=0)
    muted: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_thread_participants_user_id_thread_id", "user_id", "thread_id"),)

    @property
    def thread_role(self) -> ThreadRole:
        return ThreadRole(self.role)


def move_delivered(
    engine: AsyncEngine, rows: list[tuple[uuid.UUID, uuid.UUID, int]]
) -> list[ReturningUpdate[uuid.UUID, uuid.UUID, int, int, int]]:
    """UPDATEs moving each (thread, user)'s delivered marker forward to seq, returning
    the rows that moved and their thread's last seq: set-based UPDATEs of up to 1,000
    rows each, or on SQLite, which cannot name the columns of a VALUES list, one per
    marker (it has one writer at a time anyway)."""
    if engine.dialect.name == "sqlite":
        return [_move_delivered(t, u, s) for t, u, s in rows]
    # Sorted, then cut into statements of at most 1,000 rows (3 parameters each; a
    # statement takes 32,767): each locks keys above the ones before it locked.
    rows = sorted(rows)
    return [_move_many(rows[n : n + 1000]) for n in range(0, len(rows), 1000)]


def _move_many(
    rows: list[tuple[uuid.UUID, uuid.UUID, int]],
) -> ReturningUpdate[uuid.UUID, uuid.UUID, int, int, int]:
    wanted = values(
        column("thread_id", Uuid()),
        column("user_id", Uuid()),
        column("seq", Integer()),
        name="wanted",
    ).data(rows)
    # The rows are locked in key order first: two processes' flushes name the same
    # rows, and an UPDATE locks them in whatever order its join yields, so two of
    # them could each hold a row the other waits for (a deadlock).
    key = (ThreadParticipant.thread_id, ThreadParticipant.user_id)
    locked = (
        select(*key, wanted.c.seq)
        .join(wanted, tuple_(*key) == tuple_(wanted.c.thread_id, wanted.c.user_id))
        .where(ThreadParticipant.last_delivered_seq < wanted.c.seq)
        .order_by(*key)
        .with_for_update(key_share=True, of=ThreadParticipant)
        .cte("locked")
        .prefix_with("MATERIALIZED")
    )
    return _move_delivered(locked.c.thread_id, locked.c.user_id, locked.c.seq)


def _move_delivered(
    thread_id: Any, user_id: Any, seq: Any
) -> ReturningUpdate[uuid.UUID, uuid.UUID, int, int, int]:
    """Values, or the columns of a VALUES list."""
    return (
        update(ThreadParticipant)
        .where(
            ThreadParticipant.thread_id == thread_id,
            ThreadParticipant.user_id == user_id,
            ThreadParticipant.last_delivered_seq < seq,
        )
        .values(last_delivered_seq=seq)
        .returning(
            ThreadParticipant.thread_id,
            ThreadParticipant.user_id,
            ThreadParticipant.last_read_seq,
            ThreadParticipant.last_delivered_seq,
            select(Thread.last_seq)
            .where(Thread.id == ThreadParticipant.thread_id)
            .scalar_subquery(),
        )
    )
