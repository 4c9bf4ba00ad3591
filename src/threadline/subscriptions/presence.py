"""presence(userIds): each user's current state first, then every change."""

from __future__ import annotations

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

    async def current(user_id: uuid.UUID) -> PresenceChanged:
        user = people[user_id]
        state = await runtime.presence.get(user_id, user.last_seen_at)
        return PresenceChanged(
            user=UserType.of(user),
            presence=PresenceType(status=state.status, last_seen_at=state.last_seen_at),
        )

    channels = [presence_channel(u) for u in ids if u in people]
    async with runtime.broker.subscribe_many(channels) as subscriber:
        for user_id in ids:
            if user_id in people:
                yield await current(user_id)
        async for item in subscriber:
            if item is RECONNECTED:
                for user_id in people:
                    yield await current(user_id)
                continue
            data = orjson.loads(str(item))
            yield await current(uuid.UUID(data["u"]))
