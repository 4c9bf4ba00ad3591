"""Queries and mutations about threads and their participants."""

from __future__ import annotations

import strawberry
from strawberry import ID, Info

from threadline.resolvers import operations as op
from threadline.schema.connections import connection
from threadline.schema.directives import authenticated, thread_role
from threadline.schema.enums import ThreadRole
from threadline.schema.inputs import CreateThreadInput, UpdateThreadInput
from threadline.schema.types import ParticipantType, ThreadConnection, ThreadType
from threadline.services import threads
from threadline.services.pagination import PageRequest


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
            await op.session(info), await op.viewer(info), search, PageRequest(first, after)
        )
        page = await op.visible_now(info, page, lambda a: a.thread.id)
        # What the primary decided stands (visible_now); otherwise the page's own.
        access = op.context(info).access
        for a in page.items:
            access.setdefault(a.thread.id, a)
        return connection(
            ThreadConnection, page, lambda a: ThreadType.of(access[a.thread.id].thread)
        )


@strawberry.type
class ThreadMutations:
    @strawberry.mutation(extensions=[authenticated()])
    async def create_thread(self, info: Info, input: CreateThreadInput) -> ThreadType:
        thread = await op.write(
            info, threads.create_thread, input.title, input.description, input.participant_ids or []
        )
        return ThreadType.of(thread)

    @strawberry.mutation(
        description="Returns the existing direct thread with that user if there is one.",
        extensions=[authenticated()],
    )
    async def create_direct_thread(self, info: Info, user_id: ID) -> ThreadType:
        return ThreadType.of(await op.write(info, threads.create_direct_thread, user_id))

    @strawberry.mutation(extensions=[thread_role(ThreadRole.ADMIN)])
    async def update_thread(
        self, info: Info, thread_id: ID, input: UpdateThreadInput
    ) -> ThreadType:
        set_description = input.description is not strawberry.UNSET
        thread = await op.write(
            info,
            threads.update_thread,
            thread_id,
            title=input.title if input.title is not strawberry.UNSET else None,
            description=input.description if set_description else None,
            set_description=set_description,
        )
        return ThreadType.of(thread)

    @strawberry.mutation(extensions=[thread_role(ThreadRole.OWNER)])
    async def delete_thread(self, info: Info, thread_id: ID) -> ID:
        return ID(str(await op.write(info, threads.delete_thread, thread_id)))

    @strawberry.mutation(extensions=[thread_role(ThreadRole.ADMIN)])
    async def add_participant(
        self, info: Info, thread_id: ID, user_id: ID, role: ThreadRole | None = ThreadRole.MEMBER
    ) -> ParticipantType:
        row = await op.write(
            info, threads.add_participant, thread_id, user_id, role or ThreadRole.MEMBER
        )
        return ParticipantType.of(row)

    @strawberry.mutation(extensions=[thread_role(ThreadRole.ADMIN)])
    async def remove_participant(self, info: Info, thread_id: ID, user_id: ID) -> ID:
        return ID(str(await op.write(info, threads.remove_participant, thread_id, user_id)))

    @strawberry.mutation(extensions=[thread_role(ThreadRole.OWNER)])
    async def set_participant_role(
        self, info: Info, thread_id: ID, user_id: ID, role: ThreadRole
    ) -> ParticipantType:
        return ParticipantType.of(
            await op.write(info, threads.set_participant_role, thread_id, user_id, role)
        )

    @strawberry.mutation(extensions=[thread_role(ThreadRole.MEMBER)])
    async def leave_thread(self, info: Info, thread_id: ID) -> ID:
        return ID(str(await op.write(info, threads.leave_thread, thread_id)))

    @strawberry.mutation(extensions=[thread_role(ThreadRole.MEMBER)])
    async def mute_thread(self, info: Info, thread_id: ID, muted: bool) -> ThreadType:
        return ThreadType.of(await op.write(info, threads.mute_thread, thread_id, muted))
