"""Clerk as the source of identity: users from tokens and webhooks, ended sessions.
Clerk owns who a user is (id, username, name, picture); these functions apply it to the
local ``User`` row and tolerate Clerk's retries, reordering and concurrency."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.db import UnitOfWork, rowcount
from threadline.errors import BadInput, Conflict, SignedOut
from threadline.models import EndedClerkSession, Session, SystemRole, User, WebhookDelivery, utcnow
from threadline.models.queries import Query
from threadline.services import users
from threadline.services.text_rules import clean_external_text, has_unstorable_chars

PLACEHOLDER_NAME = "New user"
DELETED_NAME = "Deleted user"
WEBHOOK_RETENTION = timedelta(days=7)

_NAME_LENGTH = 255
_URL_LENGTH = 2048
_REASON_LENGTH = 32
# 9999-12-31T23:59:59.999Z in milliseconds: also well inside a 64-bit column.
_MAX_MILLIS = 253_402_300_799_999
_Row = TypeVar("_Row")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """The verified caller, as a verified token describes them (``auth.tokens``)."""

    clerk_id: str
    session_id: str | None
    expires_at: datetime
    username: str | None
    name: str | None
    image_url: str | None


async def user_for_identity(uow: UnitOfWork, identity: Identity) -> User:
    """The user a verified token speaks for, created on first sight (Clerk does not
    promise that ``user.created`` arrives first). A deleted user is refused."""
    user = await users.user_by_clerk_id(uow.session, identity.clerk_id)
    if user is None:
        new = User(
            clerk_id=identity.clerk_id,
            username=_clip(identity.username, _NAME_LENGTH),
            display_name=_display_name(identity.name, identity.username),
            image_url=_clip(identity.image_url, _URL_LENGTH),
            preferences={},
        )
        user = await _insert_user(uow.session, new)
    if user.deleted_at is not None:
        raise SignedOut("this account has been deleted")
    if user.clerk_updated_at is None:
        # Until a webhook has spoken, the token's claims fill gaps but never overwrite.
        if user.username is None and identity.username is not None:
            user.username = _clip(identity.username, _NAME_LENGTH)
        if user.image_url is None and identity.image_url is not None:
            user.image_url = _clip(identity.image_url, _URL_LENGTH)
        if user.display_name == PLACEHOLDER_NAME and (identity.name or identity.username):
            user.display_name = _display_name(identity.name, identity.username)
    return user


async def apply_user_event(uow: UnitOfWork, data: Mapping[str, Any]) -> bool:
    """Upsert the user of a ``user.created`` or ``user.updated`` event; whether it did.
    Svix retries and does not keep order: only an ``updated_at`` newer than the last one
    applied is applied, and nothing for a deleted user, whom it must not bring back."""
    clerk_id = _clerk_id(data)
    updated_at = _millis(data.get("updated_at"))  # refused before anything is written
    user = await users.user_by_clerk_id(uow.session, clerk_id)
    if user is None:
        created = User(clerk_id=clerk_id, preferences={})
        _apply_profile(created, data)
        # New: no socket of theirs is open yet, so nothing to tell.
        created.role = (_role(data.get("public_metadata")) or SystemRole.MEMBER).value
        user = await _insert_user(uow.session, created)
        if user is created:
            return True
    if user.deleted_at is not None:
        return False
    stored = user.clerk_updated_at
    if stored is not None and (updated_at is None or updated_at <= stored):
        return False
    _apply_profile(user, data)
    role = _role(data.get("public_metadata"))
    if role is not None:
        try:
            await users.change_role(uow, user, role)
        except Conflict:
            # The profile still applies; the role waits until another OWNER exists.
            log.warning(
                "Clerk user %s stays OWNER: the last system OWNER cannot step down", user.id
            )
    await uow.session.flush()
    return True


async def delete_user(uow: UnitOfWork, data: Mapping[str, Any]) -> User | None:
    """Soft-delete and anonymise the user of a ``user.deleted`` event, closing their
    sessions; the user, if this event deleted one. For a user never seen, a deleted row
    is still written, so that a late ``user.created`` or token cannot create them."""
    clerk_id = _clerk_id(data)
    now = utcnow()
    user = await users.user_by_clerk_id(uow.session, clerk_id)
    if user is None:
        tombstone = User(clerk_id=clerk_id, preferences={}, deleted_at=now)
        _anonymise(tombstone)
        user = await _insert_user(uow.session, tombstone)
        if user is tombstone:
            return None
    deleted_now = user.deleted_at is None
    if deleted_now:
        # Clerk has deleted them already: refusing would only make Svix retry. The
        # shell makes an OWNER again, as it made the first one. The OWNERs are locked
        # before this row is written: in the one order every role change takes them.
        if user.role == SystemRole.OWNER.value and await users.owner_ids(uow) == {user.id}:
            log.warning(
                "Clerk deleted user %s, the last system OWNER: there is none now; "
                "make one with `threadline users set-role USERNAME owner`",
                user.id,
            )
        user.deleted_at = now
        _anonymise(user)
    await _close_sessions(uow, Session.user_id == user.id, now)
    await uow.session.flush()
    return user if deleted_now else None


async def end_clerk_session(
    uow: UnitOfWork, data: Mapping[str, Any], reason: str
) -> EndedClerkSession:
    """Record that a Clerk session ended (a second event keeps the first record), and
    close its open WebSocket sessions."""
    clerk_session_id = _clerk_id(data)
    user_id = _text(data.get("user_id"))
    now = utcnow()
    ended = await uow.session.get(EndedClerkSession, clerk_session_id)
    if ended is None:
        new = EndedClerkSession(
            clerk_session_id=clerk_session_id,
            clerk_user_id=_clip(user_id, _NAME_LENGTH),
            reason=reason[:_REASON_LENGTH],
            ended_at=now,
        )
        # Another event for this session (ended, then removed) may commit first.
        ended = await _insert(
            uow.session, new, lambda: uow.session.get(EndedClerkSession, clerk_session_id)
        )
    await _close_sessions(uow, Session.clerk_session_id == clerk_session_id, now)
    return ended


async def _close_sessions(uow: UnitOfWork, which: ColumnElement[bool], now: datetime) -> None:
    await uow.session.execute(
        update(Session).where(which, Session.disconnected_at.is_(None)).values(disconnected_at=now)
    )


# Asked at every connect and first request of a session token.
_ENDED = Query(
    select(EndedClerkSession.clerk_session_id).where(
        EndedClerkSession.clerk_session_id == bindparam("clerk_session_id")
    )
)


async def is_session_ended(session: AsyncSession, clerk_session_id: str) -> bool:
    """Whether Clerk said this session ended: its tokens are refused from then on."""
    return bool(await _ENDED.scalars(session, clerk_session_id=clerk_session_id))


async def prune_webhook_deliveries(uow: UnitOfWork, *, now: datetime) -> int:
    """Forget delivered Svix ids older than WEBHOOK_RETENTION; returns how many."""
    cutoff = now - WEBHOOK_RETENTION
    old = delete(WebhookDelivery).where(WebhookDelivery.received_at < cutoff)
    return rowcount(await uow.session.execute(old))


async def _insert_user(session: AsyncSession, user: User) -> User:
    return await _insert(session, user, lambda: users.user_by_clerk_id(session, user.clerk_id))


async def _insert(
    session: AsyncSession, row: _Row, existing: Callable[[], Awaitable[_Row | None]]
) -> _Row:
    """Insert ``row``, or return the ``existing`` one a concurrent request inserted
    meanwhile: the savepoint keeps the transaction usable after the unique key refuses."""
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        found = await existing()
        if found is None:
            raise
        return found
    return row


def _apply_profile(user: User, data: Mapping[str, Any]) -> None:
    username = _clip(_text(data.get("username")), _NAME_LENGTH)
    full_name = " ".join(
        part for part in (_text(data.get("first_name")), _text(data.get("last_name"))) if part
    )
    user.username = username
    user.display_name = _display_name(full_name, username)
    user.image_url = _clip(_text(data.get("image_url")), _URL_LENGTH)
    user.clerk_updated_at = _millis(data.get("updated_at"))


def _anonymise(user: User) -> None:
    user.display_name = DELETED_NAME
    user.username = None
    user.image_url = None
    user.preferences = {}


def _display_name(name: str | None, username: str | None) -> str:
    # Never the e-mail address: every other user would see it.
    chosen = (name or "").strip() or (username or "").strip() or PLACEHOLDER_NAME
    return chosen[:_NAME_LENGTH]


def _role(metadata: object) -> SystemRole | None:
    value = metadata.get("role") if isinstance(metadata, Mapping) else None
    if not isinstance(value, str):
        return None
    try:
        return SystemRole(value.strip().upper())
    except ValueError:
        return None


def _clerk_id(data: Mapping[str, Any]) -> str:
    # An id is refused, not cleaned: a cleaned id would be another user's.
    value = data.get("id")
    value = value.strip() if isinstance(value, str) else ""
    if not value or len(value) > _NAME_LENGTH or has_unstorable_chars(value):
        raise BadInput("the event's data has no valid id")
    return value


def _millis(value: object) -> int | None:
    """Clerk's times are milliseconds since the epoch; one past year 9999 is no time."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if not 0 <= value <= _MAX_MILLIS:
        raise BadInput("the event's updated_at is out of range")
    return value


def _text(value: object) -> str | None:
    # Clerk's JSON may carry NUL or lone surrogates, which no column takes.
    return (clean_external_text(value) or None) if isinstance(value, str) else None


def _clip(value: str | None, length: int) -> str | None:
    return value[:length] if value is not None else None
