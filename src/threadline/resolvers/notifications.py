"""Queries and mutations about the signed-in user's notifications."""

from __future__ import annotations

import strawberry
from strawberry import ID, Info

from threadline.resolvers import operations as op
from threadline.schema.connections import connection
from threadline.schema.directives import authenticated
from threadline.schema.types import NotificationConnection, NotificationType
from threadline.services import notifications
from threadline.services.pagination import PageRequest


@strawberry.type
class NotificationQueries:
    @strawberry.field(extensions=[authenticated()])
    async def notifications(
        self,
        info: Info,
        unread_only: bool | None = False,
        first: int | None = None,
        after: str | None = None,
    ) -> NotificationConnection:
        page, unread = await notifications.notifications_of(
            await op.session(info),
            await op.viewer(info),
            bool(unread_only),
            PageRequest(first, after),
        )
        return connection(NotificationConnection, page, NotificationType.of, unread_count=unread)


@strawberry.type
class NotificationMutations:
    @strawberry.mutation(extensions=[authenticated()])
    async def mark_notifications_read(
        self, info: Info, ids: list[ID] | None = None, all: bool | None = False
    ) -> int:
        async with op.writing(info, "mark_notifications_read") as (uow, viewer):
            return await notifications.mark_read(uow, viewer, ids, bool(all))
