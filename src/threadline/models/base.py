"""The declarative base, column types shared by every table, and the role enums."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

from sqlalchemy import JSON, DateTime, ForeignKey, MetaData, String, TypeDecorator, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from threadline.models.seam import instance_factory

# Named constraints, so that migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class SystemRole(StrEnum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"


class ThreadRole(StrEnum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"


class NotificationKind(StrEnum):
    MENTION = "MENTION"
    REPLY = "REPLY"
    REACTION = "REACTION"
    ADDED_TO_THREAD = "ADDED_TO_THREAD"


class AttachmentKind(StrEnum):
    IMAGE = "IMAGE"
    VIDEO = "VIDEO"
    AUDIO = "AUDIO"
    DOCUMENT = "DOCUMENT"
    OTHER = "OTHER"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and handed back aware (SQLite's naive values are UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONDocument = JSON().with_variant(JSONB(), "postgresql")
RoleColumn = String(16)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime(), uuid.UUID: Uuid()}

    @classmethod
    def as_stored(cls, **columns: Any) -> Self:
        """A row a statement of ours just wrote, built as the ORM loads one (a fraction of
        ``cls(...)``'s cost): for results, never for a session. Every column must be given."""
        assert columns.keys() == _column_keys(cls), "as_stored needs every column"
        instance: Self = instance_factory(cls)()
        instance.__dict__.update(columns)
        return instance


@functools.cache
def _column_keys(cls: type[Base]) -> frozenset[str]:
    return frozenset(attribute.key for attribute in cls.__mapper__.column_attrs)


def id_column() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)


def id_reference(table: str, ondelete: str, **options: Any) -> Mapped[Any]:
    return mapped_column(ForeignKey(f"{table}.id", ondelete=ondelete), **options)
