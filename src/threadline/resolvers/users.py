"""Queries and mutations about users, the signed-in user and their sessions."""

from __future__ import annotations

import strawberry
from strawberry import ID, Info

from threadline.errors import NotFound
from threadline.realtime.rate_limits import Action
from threadline.resolvers import operations as op
from threadline.schema.connections import connection
from threadline.schema.directives import authenticated, has_role
from threadline.schema.enums import PresenceStatus, SystemRole
from threadline.schema.inputs import UpdateMeInput
from threadline.schema.types import (
    AttachmentType,
    MessageType,
    Node,
    NotificationType,
    PresenceType,
    SessionType,
    ThreadType,
    UserConnection,
    UserType,
)
from threadline.services import attachments, notifications, users
from threadline.services.pagination import PageRequest
from threadline.services.permissions import parse_id


@strawberry.type
class UserQueries:
    @strawberry.field(description="The signed-in user.", extensions=[authenticated()])
    async def me(self, info: Info) -> UserType:
        return UserType.of(await op.viewer(info))

    @strawberry.field(extensions=[authenticated()])
    async def user(self, info: Info, id: ID) -> UserType | None:
        try:
            return UserType.of(await users.get_user(await op.session(info), id))
        except NotFound:
            return None

    @strawberry.field(
        description="Users whose username or display name contains `search`.",
        extensions=[authenticated()],
    )
    async def users(
        self,
        info: Info,
        search: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> UserConnection:
        page = await users.search_users(await op.session(info), search, PageRequest(first, after))
        return connection(UserConnection, page, UserType.of)

    @strawberry.field(extensions=[authenticated()])
    async def node(self, info: Info, id: ID) -> Node | None:
        """Any object by id, if the viewer may see it; ids are UUIDs, unique across tables."""
        try:
            node_id = parse_id(id)
        except NotFound:
            return None
        viewer = await op.viewer(info)
        session = await op.session(info)
        loaders = op.context(info).loaders
        user = await loaders.user.load(node_id)
        if user is not None:
            return UserType.of(user)
        # The thread loader decides on the primary, as every path to a thread does.
        thread = await loaders.thread.load(node_id)
        if thread is not None:
            return ThreadType.of(thread)
        message = await loaders.message.load(node_id)
        if message is not None:
            shown = await loaders.thread.load(message.thread_id)
            return MessageType.of(message) if shown is not None else None
        # Of a deleted message or thread: gone for everyone, whatever the access.
        attachment = await attachments.downloadable(session, node_id)
        if attachment is not None:
            shown = await loaders.thread.load(attachment.thread_id)
            return AttachmentType.of(attachment) if shown is not None else None
        notification = await notifications.get_notification(session, viewer, node_id)
        if notification is not None:
            return NotificationType.of(notification)
        for row in await users.sessions_of(session, viewer):
            if row.id == node_id:
                return SessionType.of(row)
        return None

    @strawberry.field(extensions=[authenticated()])
    async def my_sessions(self, info: Info) -> list[SessionType]:
        rows = await users.sessions_of(await op.session(info), await op.viewer(info))
        return [SessionType.of(r) for r in rows]


@strawberry.type
class UserMutations:
    @strawberry.mutation(extensions=[authenticated()])
    async def update_me(self, info: Info, input: UpdateMeInput) -> UserType:
        user = await op.write(
            info,
            users.update_me,
            display_name=input.display_name if input.display_name else None,
            preferences=input.preferences,
            set_preferences=input.preferences is not strawberry.UNSET,
        )
        return UserType.of(user)

    @strawberry.mutation(extensions=[has_role(SystemRole.OWNER)])
    async def set_user_role(self, info: Info, user_id: ID, role: SystemRole) -> UserType:
        user = await op.write(info, users.set_user_role, user_id, role)
        # The process's caches would show the old role for a few seconds: drop it now.
        op.context(info).runtime.forget_viewers(clerk_user_ids=[user.clerk_id])
        return UserType.of(user)

    @strawberry.mutation(extensions=[authenticated()])
    async def set_presence(self, info: Info, status: PresenceStatus) -> PresenceType:
        viewer = await op.limit(info, Action.MUTATION)
        state = await op.context(info).runtime.presence.set_status(viewer.id, status)
        return PresenceType(status=state.status, last_seen_at=state.last_seen_at)
