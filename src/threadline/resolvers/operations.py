"""What every resolver needs: the viewer, a read session, a rate-limited unit of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry import Info

from threadline.db import UnitOfWork
from threadline.models import User
from threadline.realtime.rate_limits import Action

__all__ = ["Action", "checked_access", "context", "limit", "session", "viewer", "writing"]
from threadline.services.permissions import ThreadAccess, parse_id

if TYPE_CHECKING:
    from threadline.schema.context import Context


def context(info: Info) -> Context:
    return info.context  # type: ignore[no-any-return]


async def viewer(info: Info) -> User:
    return await context(info).viewer()


async def session(info: Info) -> AsyncSession:
    return await context(info).session()


def checked_access(info: Info, thread_id: object) -> ThreadAccess:
    """The access @threadRole established for this operation's thread."""
    return context(info).access[parse_id(str(thread_id), "Thread")]


async def limit(info: Info, action: Action) -> User:
    user = await viewer(info)
    await context(info).runtime.rate_limiter.hit(action, str(user.id))
    return user


@asynccontextmanager
async def writing(
    info: Info, name: str, action: Action = Action.MUTATION
) -> AsyncIterator[tuple[UnitOfWork, User]]:
    """One named, rate-limited transaction; the operation's loaders start afresh after it."""
    ctx = context(info)
    user = await limit(info, action)
    await ctx.before_write()
    async with ctx.runtime.db.transaction(name) as uow:
        yield uow, user
    ctx.after_write()
