"""Queries and mutations about threads and their participants."""

from __future__ import annotations

import strawberry
from strawberry import ID, Info

from threadline.resolvers import operations as op
from threadline.schema.connections import connection, page_args
from threadline.schema.directives import authenticated, thread_role
from threadline.schema.enums import ThreadRole
from threadline.schema.inputs import CreateThreadInput, UpdateThreadInput
from threadline.schema.types import ParticipantType, ThreadConnection, ThreadEdge, ThreadType
from threadline.services import threads


@strawberry.type
class ThreadQueries:
    @strawberry.field(extensions=[thread_role(ThreadRole.MEMBER)])
    async def thread(self, info: Info, thread_id: ID) -> ThreadType:
        return ThreadType.of(op.checked_access(info, thread_id).thread)

    @strawberry.field(
        description="The signed-in user's threads, most recently active first.",
        extensions=[authenticated()],
    )
    async def threads(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        search: str | None = None,
    ) -> ThreadConnection:
        page = await threads.threads_of(
            await op.session(info), await op.viewer(info), search, page_args(first, after)
        )
        page = await op.visible_now(info, page, lambda a: a.thread.id)
        # What the primary decided stands (visible_now); otherwise the page's own.
        access = op.context(info).access
        for a in page.items:
            access.setdefault(a.thread.id, a)
        return connection(
            ThreadConnection, page, ThreadEdge, lambda a: ThreadType.of(access[a.thread.id].thread)
        )


@strawberry.type
class ThreadMutations:
    @strawberry.mutation(extensions=[authenticated()])
    async def create_thread(self, info: Info, input: CreateThreadInput) -> ThreadType:
        async with op.writing(info, "create_thread") as (uow, viewer):
            thread = await threads.create_thread(
                uow, viewer, input.title, input.description, input.participant_ids or []
            )
        return ThreadType.of(thread)

    @strawberry.mutation(
        description="Returns the existing direct thread with that user if there is one.",
        extensions=[authenticated()],
    )
    async def create_direct_thread(self, info: Info, user_id: ID) -> ThreadType:
        async with op.writing(info, "create_direct_thread") as (uow, viewer):
            thread = await threads.create_direct_thread(uow, viewer, user_id)
        return ThreadType.of(thread)

    @strawberry.mutation(extensions=[thread_role(ThreadRole.ADMIN)])
    async def update_thread(
        self, info: Info, thread_id: ID, input: UpdateThreadInput
    ) -> ThreadType:
        set_description = input.description is not strawberry.UNSET
        async with op.writing(info, "update_thread") as (uow, viewer):
            thread = await threads.update_thread(
                uow,
                viewer,
                thread_id,
                title=input.title if input.title is not strawberry.UNSET else None,
                description=input.description if set_description else None,
                set_description=set_description,
            )
        return ThreadType.of(thread)

    @strawberry.mutation(extensions=[thread_role(ThreadRole.OWNER)])
    async def delete_thread(self, info: Info, thread_id: ID) -> ID:
        async with op.writing(info, "delete_thread") as (uow, viewer):
            deleted = await threads.delete_thread(uow, viewer, thread_id)
        return ID(str(deleted))

    @strawberry.mutation(extensions=[thread_role(ThreadRole.ADMIN)])
    async def add_participant(
        self, info: Info, thread_id: ID, user_id: ID, role: ThreadRole | None = ThreadRole.MEMBER
    ) -> ParticipantType:
        async with op.writing(info, "add_participant") as (uow, viewer):
            row = await threads.add_participant(
                uow, viewer, thread_id, user_id, role or ThreadRole.MEMBER
            )
        return ParticipantType.of(row)

    @strawberry.mutation(extensions=[thread_role(ThreadRole.ADMIN)])
    async def remove_participant(self, info: Info, thread_id: ID, user_id: ID) -> ID:
        async with op.writing(info, "remove_participant") as (uow, viewer):
            removed = await threads.remove_participant(uow, viewer, thread_id, user_id)
        return ID(str(removed))

    @strawberry.mutation(extensions=[thread_role(ThreadRole.OWNER)])
    async def set_participant_role(
        self, info: Info, thread_id: ID, user_id: ID, role: ThreadRole
    ) -> ParticipantType:
        async with op.writing(info, "set_participant_role") as (uow, viewer):
            row = await threads.set_participant_role(uow, viewer, thread_id, user_id, role)
        return ParticipantType.of(row)

    @strawberry.mutation(extensions=[thread_role(ThreadRole.MEMBER)])
    async def leave_thread(self, info: Info, thread_id: ID) -> ID:
        async with op.writing(info, "leave_thread") as (uow, viewer):
            left = await threads.leave_thread(uow, viewer, thread_id)
        return ID(str(left))

    @strawberry.mutation(extensions=[thread_role(ThreadRole.MEMBER)])
    async def mute_thread(self, info: Info, thread_id: ID, muted: bool) -> ThreadType:
        async with op.writing(info, "mute_thread") as (uow, viewer):
            thread = await threads.mute_thread(uow, viewer, thread_id, muted)
        return ThreadType.of(thread)
