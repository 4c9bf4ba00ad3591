"""presence(userIds): each user's current state first, then every change."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import orjson
from strawberry import Info

from threadline.errors import BadInput
from threadline.realtime.broker import RECONNECTED
from threadline.realtime.channels import presence_channel
from threadline.schema.context import Context
from threadline.schema.events import PresenceChanged
from threadline.schema.types import PresenceType, UserType
from threadline.services.permissions import parse_id
from threadline.services.users import users_by_ids

MAX_USERS = 200


async def stream(info: Info, user_ids: Sequence[str]) -> AsyncIterator[PresenceChanged]:
    ctx: Context = info.context
    ids = list(dict.fromkeys(parse_id(u, "User") for u in user_ids))
    if len(ids) > MAX_USERS:
        raise BadInput(f"At most {MAX_USERS} users")
    runtime = ctx.runtime
    async with runtime.db.reading() as session:
        people = await users_by_ids(session, ids)
    await ctx.close()

    async def current(user_ids: Sequence[uuid.UUID]) -> list[PresenceChanged]:
        """Each user's state now, read in one go."""
        known = [people[u] for u in user_ids if u in people]
        states = await runtime.presence.get_many([(u.id, u.last_seen_at) for u in known])
        return [
            PresenceChanged(
                user=UserType.of(user),
                presence=PresenceType(status=state.status, last_seen_at=state.last_seen_at),
            )
            for user, state in zip(known, states, strict=True)
        ]

    channels = [presence_channel(u) for u in ids if u in people]
    if not channels:
        # No ids, or only those of users deleted since: nothing to show and nothing
        # will change. Held open as any other: an ended stream, clients subscribe again.
        await asyncio.Event().wait()
    async with runtime.broker.subscribe_many(channels) as subscriber:
        for change in await current(ids):
            yield change
        async for item in subscriber:
            # After a reconnection, everyone's: a change may have been missed meanwhile.
            changed = (
                list(people) if item is RECONNECTED else [uuid.UUID(orjson.loads(str(item))["u"])]
            )
            for change in await current(changed):
                yield change
