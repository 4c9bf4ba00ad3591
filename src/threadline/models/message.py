"""Messages, their edit history and their emoji reactions."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    Index,
    Integer,
    Select,
    String,
    Text,
    UniqueConstraint,
    column,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from threadline.models.base import Base, id_column, id_reference, utcnow


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[uuid.UUID] = id_column()
    thread_id: Mapped[uuid.UUID] = id_reference("threads", "CASCADE")
    # The seq of the MessageCreated event: the message's place in the thread's log.
    seq: Mapped[int] = mapped_column(Integer)
    author_id: Mapped[uuid.UUID | None] = id_reference("users", "SET NULL")
    body: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(String(255))
    parent_id: Mapped[uuid.UUID | None] = id_reference("messages", "SET NULL", index=True)
    # Ids (as strings) of the participants mentioned; resolved through the user loader.
    mention_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    pinned_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    edited_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("thread_id", "seq"),
        UniqueConstraint("thread_id", "author_id", "client_id"),
    )


class MessageEdit(Base):
    __tablename__ = "message_edits"

    id: Mapped[uuid.UUID] = id_column()
    message_id: Mapped[uuid.UUID] = id_reference("messages", "CASCADE", index=True)
    previous_body: Mapped[str] = mapped_column(Text)
    edited_by_id: Mapped[uuid.UUID | None] = id_reference("users", "SET NULL")
    edited_at: Mapped[datetime] = mapped_column(default=utcnow)


class Reaction(Base):
    __tablename__ = "reactions"

    id: Mapped[uuid.UUID] = id_column()
    message_id: Mapped[uuid.UUID] = id_reference("messages", "CASCADE")
    user_id: Mapped[uuid.UUID] = id_reference("users", "CASCADE")
    emoji: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("message_id", "user_id", "emoji"),
        Index("ix_reactions_message_id_created_at", "message_id", "created_at"),
    )


_WORD = re.compile(r"\w+")
# PostgreSQL's english stop words (tsearch_data/english.stop): left out of its
# tsvectors and queries, and so out of SQLite's queries too.
_STOP_WORDS = frozenset(
    "i me my myself we our ours ourselves you your"  # noqa: SIM905 - a list of 127 lines
    " yours yourself yourselves he him his himself she her hers herself it its itself they"
    " them their theirs themselves what which who whom this that these those am is are was"
    " were be been being have has had having do does did doing a an the and but if or"
    " because as until while of at by for with about against between into through during"
    " before after above below to from up down in out on off over under again further then"
    " once here there when where why how all any both each few more most other some such no"
    " nor not only own same so than too very s t can will just don should now".split()
)
# PostgreSQL indexes "e-mail" as "e-mail", "e" and "mail", but a query for "e-mail"
# needed all three; apart, its words match as on SQLite (numbers: "-19" is a number).
_HYPHEN = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")


def full_text_match(session: AsyncSession, query: str) -> tuple[Select[Message, float], Any] | None:
    """Messages matching ``query`` with their rank (higher first), and the rank's
    expression; None: no words.

    The rank depends on the message and the query alone, not on the rest of the corpus,
    so that an unchanged message keeps its place (and its cursor) while others come and go.
    PostgreSQL: the generated tsvector column against ``plainto_tsquery`` (every word,
    no operators: ``-word`` or ``or`` mean what they do on SQLite), ranked by ts_rank_cd;
    SQLite: the FTS5 table the migration keeps in step with messages, ranked by the
    density of matched words (not bm25, whose statistics change with every insert).
    """
    words = [w for w in _WORD.findall(query) if w.lower() not in _STOP_WORDS]
    if not words:  # PostgreSQL would find nothing too (and say so in a NOTICE)
        return None
    if session.get_bind().dialect.name == "postgresql":
        tsquery = func.plainto_tsquery(literal_column("'english'"), _HYPHEN.sub(" ", query))
        vector: Any = column("search_vector")
        rank = func.ts_rank_cd(vector, tsquery, type_=Float)
        return select(Message, rank).where(vector.op("@@")(tsquery)), rank
    # Each word quoted, so that FTS5 syntax in user input is inert (\w matches no quote).
    fts = " ".join(f'"{word}"' for word in words)
    # highlight() adds one character before each matched word: length grows by the hits.
    density = "length(highlight(messages_fts, 0, ' ', '')) * 1.0 / length(body)"
    matches = (
        select(literal_column("rowid").label("rid"), literal_column(density, Float).label("rank"))
        .select_from(text("messages_fts"))
        .where(text("messages_fts MATCH :q").bindparams(q=fts))
        # No limit, but SQLite then keeps the subquery apart instead of folding it into
        # the outer query, which calls highlight() again per use of the rank (2x slower).
        .limit(-1)
        .subquery()
    )
    on = literal_column("messages.rowid") == matches.c.rid
    return select(Message, matches.c.rank).join(matches, on), matches.c.rank
