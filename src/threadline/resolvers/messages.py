"""Queries and mutations about messages: history, search, reactions, receipts.

The pages themselves are built in schema/types.py, where Thread and Message fields use them too.
"""

from __future__ import annotations

import strawberry
from starlette.datastructures import UploadFile
from strawberry import ID, Info
from strawberry.file_uploads import Upload

from threadline.errors import BadInput
from threadline.realtime.rate_limits import Action
from threadline.resolvers import operations as op
from threadline.schema.directives import authenticated, thread_role
from threadline.schema.enums import ThreadRole
from threadline.schema.inputs import SendMessageInput
from threadline.schema.types import (
    AttachmentType,
    MessageConnection,
    MessageType,
    ThreadType,
    message_connection,
    thread_messages,
)
from threadline.services import attachments, messages, receipts, search
from threadline.services.pagination import PageRequest
from threadline.services.permissions import parse_id


@strawberry.type
class MessageQueries:
    @strawberry.field(extensions=[thread_role(ThreadRole.MEMBER)])
    async def messages(
        self,
        info: Info,
        thread_id: ID,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> MessageConnection:
        thread = op.checked_access(info, thread_id).thread
        return await thread_messages(info, thread, PageRequest(first, after, last, before))

    @strawberry.field(extensions=[thread_role(ThreadRole.MEMBER)])
    async def message(self, info: Info, message_id: ID) -> MessageType:
        row = await messages.get_message(await op.session(info), parse_id(message_id, "Message"))
        return MessageType.of(row)

    @strawberry.field(
        description="Full-text search over messages in threads the signed-in user is in.",
        extensions=[authenticated()],
    )
    async def search_messages(
        self,
        info: Info,
        query: str,
        thread_id: ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> MessageConnection:
        page = await search.search_messages(
            await op.session(info),
            await op.viewer(info),
            query,
            parse_id(thread_id, "Thread") if thread_id is not None else None,
            PageRequest(first, after),
        )
        return await message_connection(
            info, await op.visible_now(info, page, lambda m: m.thread_id)
        )


@strawberry.type
class MessageMutations:
    # The write itself checks the role, under the lock that orders the thread's
    # messages: the same rule as the directive, in one round trip, and race-free.
    @strawberry.mutation(extensions=[thread_role(ThreadRole.MEMBER, checked_by_write=True)])
    async def send_message(self, info: Info, input: SendMessageInput) -> MessageType:
        async with op.acting(info, Action.SEND_MESSAGE) as (ctx, viewer):
            message = await messages.send_message(
                ctx.runtime.db,
                viewer,
                input.thread_id,
                input.body,
                parent_id=input.parent_id,
                client_id=input.client_id,
                attachment_ids=input.attachment_ids or [],
            )
        return MessageType.of(message)

    @strawberry.mutation(
        description="Only the author may edit. The previous body is kept as a MessageEdit.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def edit_message(self, info: Info, message_id: ID, body: str) -> MessageType:
        return MessageType.of(await op.write(info, messages.edit_message, message_id, body))

    @strawberry.mutation(
        description="The author, or a thread ADMIN (moderation), may delete.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def delete_message(self, info: Info, message_id: ID) -> MessageType:
        return MessageType.of(await op.write(info, messages.delete_message, message_id))

    @strawberry.mutation(extensions=[thread_role(ThreadRole.ADMIN)])
    async def pin_message(self, info: Info, message_id: ID, pinned: bool) -> MessageType:
        return MessageType.of(await op.write(info, messages.pin_message, message_id, pinned))

    @strawberry.mutation(
        description="Adding the same emoji twice is a no-op.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def add_reaction(self, info: Info, message_id: ID, emoji: str) -> MessageType:
        return MessageType.of(await op.write(info, messages.add_reaction, message_id, emoji))

    @strawberry.mutation(extensions=[thread_role(ThreadRole.MEMBER)])
    async def remove_reaction(self, info: Info, message_id: ID, emoji: str) -> MessageType:
        return MessageType.of(await op.write(info, messages.remove_reaction, message_id, emoji))

    @strawberry.mutation(
        description="Upload a file to attach to a later sendMessage.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def upload_attachment(self, info: Info, thread_id: ID, file: Upload) -> AttachmentType:
        upload: object = file
        if not isinstance(upload, UploadFile):
            # The Upload scalar takes any variable value; only a multipart file part is one.
            raise BadInput("`file` must be a file part of a multipart request (the upload spec)")
        # Not closed here: one file may fill several variables (the request closes it).
        async with op.acting(info, Action.UPLOAD) as (ctx, viewer):
            row = await attachments.upload_attachment(
                ctx.runtime.db,
                ctx.runtime.storage,
                viewer,
                thread_id,
                upload,
                max_bytes=ctx.runtime.settings.max_upload_bytes,
                render_preview=ctx.runtime.settings.image_previews,
            )
        return AttachmentType.of(row)

    @strawberry.mutation(
        description="Moves the caller's read marker forward (never back) and returns the thread.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def mark_read(self, info: Info, thread_id: ID, seq: int) -> ThreadType:
        access = op.checked_access(info, thread_id)
        await op.write(info, receipts.mark_read, access, seq)
        return ThreadType.of(access.thread)

    @strawberry.mutation(
        description="Announces that the caller starts or stops typing; expires by itself.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def set_typing(self, info: Info, thread_id: ID, is_typing: bool) -> bool:
        viewer = await op.limit(info, Action.SET_TYPING)
        access = op.checked_access(info, thread_id)
        typing = op.context(info).runtime.typing
        await typing.set(access.thread.id, viewer.id, is_typing, access.thread.last_seq)
        return True
