"""Users as the app sees them: lookup, search, profile and role changes."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.db import Database, UnitOfWork
from threadline.errors import BadInput, Conflict, Forbidden, NotFound
from threadline.models import Session, SystemRole, User
from threadline.models.queries import Query
from threadline.services.events import SystemRoleChanged
from threadline.services.pagination import Page, PageRequest, make_page, text_id_key
from threadline.services.permissions import parse_id, require_system_role
from threadline.services.search import contains_text
from threadline.services.text_rules import clean_display_name, clean_search, has_unencodable_chars

DEV_CLERK_PREFIX = "dev_"
MAX_PREFERENCES_BYTES = 16_384
MAX_PREFERENCES_DEPTH = 32
SESSIONS_SHOWN = 50  # mySessions: the newest; the query cost model counts this many
# orjson writes, and both databases keep, integers of 64 bits.
_JSON_INTS = range(-(2**63), 2**63)


async def get_user(session: AsyncSession, user_id: str | uuid.UUID) -> User:
    user = await session.get(User, parse_id(user_id, "User"))
    if user is None:
        raise NotFound("User not found")
    return user


_USERS_BY_IDS = Query(select(User).where(User.id.in_(bindparam("ids", expanding=True))))
_USER_BY_CLERK_ID = Query(select(User).where(User.clerk_id == bindparam("clerk_id")))
_STANDING = Query(
    select(User.id, User.role, User.deleted_at).where(User.id.in_(bindparam("ids", expanding=True)))
)


async def standing(db: Database, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """Each user's system role now; None for a deleted user (missing: gone too)."""
    rows = await _STANDING.pooled(db, "user_standing", ids=list(user_ids))
    return {user_id: None if deleted else role for user_id, role, deleted in rows}


async def users_by_ids(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, User]:
    if not ids:
        return {}
    rows = await _USERS_BY_IDS.scalars(session, ids=list(set(ids)))
    return {u.id: u for u in rows}


async def user_by_clerk_id(session: AsyncSession, clerk_id: str) -> User | None:
    """The local user of a Clerk user id (deleted ones too), if synced."""
    found = await _USER_BY_CLERK_ID.scalars(session, clerk_id=clerk_id)
    return found[0] if found else None


async def search_users(
    session: AsyncSession, search: str | None, request: PageRequest
) -> Page[User]:
    """Live users whose username or display name contains ``search``, by name."""
    after = request.forwards_key("Users page")
    query = select(User).where(User.deleted_at.is_(None))
    search = clean_search(search)
    if search:
        query = query.where(
            or_(contains_text(User.username, search), contains_text(User.display_name, search))
        )
    if after is not None:
        query = query.where(tuple_(User.display_name, User.id) > text_id_key(after))
    query = query.order_by(User.display_name, User.id).limit(request.size + 1)
    rows = list(await session.scalars(query))
    return make_page(rows, request, lambda u: [u.display_name, str(u.id)])


async def update_me(
    uow: UnitOfWork,
    actor: User,
    *,
    display_name: str | None = None,
    preferences: Any = None,
    set_preferences: bool = False,
) -> User:
    user = await get_user(uow.session, actor.id)
    if display_name is not None:
        user.display_name = clean_display_name(display_name)
    if set_preferences:
        if not isinstance(preferences, dict):
            raise BadInput("`preferences` must be a JSON object")
        _check_json(preferences, "`preferences`", 1)
        if len(orjson.dumps(preferences)) > MAX_PREFERENCES_BYTES:
            raise BadInput(f"`preferences` must be at most {MAX_PREFERENCES_BYTES} bytes")
        user.preferences = preferences
    await uow.session.flush()
    return user


def _check_json(value: object, what: str, depth: int) -> None:
    """Refuse what the databases or the JSON encoder cannot keep (the standard library's
    parser takes NaN, lone surrogates and huge numbers); nesting is bounded so that
    neither the encoder nor this walk runs out of stack."""
    if depth > MAX_PREFERENCES_DEPTH:
        raise BadInput(f"{what} is nested more than {MAX_PREFERENCES_DEPTH} deep")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if has_unencodable_chars(value):
            raise BadInput(f"{what} must not contain NUL or lone surrogates")
    elif isinstance(value, int):
        if value not in _JSON_INTS:
            raise BadInput(f"{what} holds an integer outside 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadInput(f"{what} holds a number that JSON cannot write")
    elif isinstance(value, list):
        for item in value:
            _check_json(item, what, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, what, depth + 1)
            _check_json(item, what, depth + 1)
    else:
        raise BadInput(f"{what} must be JSON")


async def set_user_role(
    uow: UnitOfWork, actor: User, user_id: str | uuid.UUID, role: SystemRole
) -> User:
    require_system_role(actor, SystemRole.OWNER)
    if actor.id not in await owner_ids(uow):  # demoted meanwhile
        raise Forbidden(f"This needs the system role {SystemRole.OWNER.value} or higher")
    user = await get_user(uow.session, user_id)
    if user.deleted_at is not None:
        raise NotFound("User not found")
    await change_role(uow, user, role)
    await uow.session.flush()
    return user


async def change_role(uow: UnitOfWork, user: User, role: SystemRole) -> None:
    """Every change of a system role goes through here, from the API, the command line
    and Clerk's webhooks alike: the last OWNER stays one, and after commit every process
    closes the user's sockets, whose streams were authorized with the old role."""
    if user.role == role.value:
        return
    if user.role == SystemRole.OWNER.value and await owner_ids(uow) == {user.id}:
        raise Conflict("The last system OWNER cannot step down")
    user.role = role.value
    uow.emit(SystemRoleChanged(user.id))


async def owner_ids(uow: UnitOfWork) -> set[uuid.UUID]:
    # Locked, so that concurrent role changes are decided one after the other: two
    # OWNERs stepping down (or demoting each other) at once each counted the other and
    # left the deployment with none.
    return set(
        await uow.session.scalars(
            select(User.id)
            .where(User.role == SystemRole.OWNER.value, User.deleted_at.is_(None))
            .order_by(User.id)
            .with_for_update()
        )
    )


async def set_role_by_username(uow: UnitOfWork, username: str, role: SystemRole) -> User:
    """The CLI's bootstrap: no actor, the operator's shell is the authority."""
    user = await uow.session.scalar(
        select(User).where(User.username == username, User.deleted_at.is_(None))
    )
    if user is None:
        raise NotFound(f"No user named {username!r}")
    await change_role(uow, user, role)
    await uow.session.flush()
    return user


async def ensure_dev_user(uow: UnitOfWork, username: str) -> User:
    """The user behind a development token, created on first use."""
    name = username.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "_-." for c in name):
        raise BadInput("A username is 1 to 64 letters, digits, '_', '-' or '.'")
    clerk_id = DEV_CLERK_PREFIX + name
    user = await user_by_clerk_id(uow.session, clerk_id)
    if user is None:
        user = User(clerk_id=clerk_id, username=name, display_name=name)
        uow.session.add(user)
        await uow.session.flush()
    return user


async def sessions_of(session: AsyncSession, actor: User) -> list[Session]:
    rows = await session.scalars(
        select(Session)
        .where(Session.user_id == actor.id)
        .order_by(Session.connected_at.desc())
        .limit(SESSIONS_SHOWN)
    )
    return list(rows)
