"""What every resolver needs: the viewer, a read session, a rate-limited unit of work."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry import Info

from threadline.db import UnitOfWork
from threadline.models import User
from threadline.realtime.rate_limits import Action
from threadline.services.pagination import Page, only
from threadline.services.permissions import ThreadAccess, parse_id

T = TypeVar("T")
P = ParamSpec("P")

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


async def visible_now(info: Info, page: Page[T], thread_of: Callable[[T], uuid.UUID]) -> Page[T]:
    """A page read on the replica, less what the viewer may no longer see.

    The replica's own filter (participants) may lag: a user removed a moment ago
    must not list the thread or find its messages. The thread loader decides on
    the primary; off the replica the page was filtered there already.
    """
    ctx = context(info)
    if not page.items or not await ctx.on_replica():
        return page
    ids = list(dict.fromkeys(thread_of(item) for item in page.items))
    shown = {t.id for t in await ctx.loaders.thread.load_many(ids) if t is not None}
    return only(page, lambda item: thread_of(item) in shown)


@asynccontextmanager
async def acting(info: Info, action: Action) -> AsyncIterator[tuple[Context, User]]:
    """A rate-limited write; the operation's loaders start afresh after it."""
    ctx = context(info)
    user = await limit(info, action)
    await ctx.before_write()
    yield ctx, user
    ctx.after_write()


@asynccontextmanager
async def writing(
    info: Info, name: str, action: Action = Action.MUTATION
) -> AsyncIterator[tuple[UnitOfWork, User]]:
    """One named, rate-limited transaction."""
    async with acting(info, action) as (ctx, user), ctx.runtime.db.transaction(name) as uow:
        yield uow, user


async def write(
    info: Info,
    service: Callable[Concatenate[UnitOfWork, User, P], Awaitable[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``service(uow, viewer, ...)`` as ``writing`` does it, the transaction named after it."""
    async with writing(info, service.__name__) as (uow, viewer):
        return await service(uow, viewer, *args, **kwargs)
