"""Queries and mutations about messages: history, replies, search, reactions, receipts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

import strawberry
from starlette.datastructures import UploadFile
from strawberry import ID, Info
from strawberry.file_uploads import Upload

from threadline import models
from threadline.errors import BadInput
from threadline.realtime.rate_limits import Action
from threadline.resolvers import operations as op
from threadline.schema.connections import PageInfo, edges, page_args, page_info
from threadline.schema.directives import authenticated, thread_role
from threadline.schema.enums import ThreadRole
from threadline.schema.inputs import SendMessageInput
from threadline.schema.resolving import many_now_or_later, now_or_later, selected_under, settled
from threadline.schema.types import (
    AttachmentType,
    MessageConnection,
    MessageEdge,
    MessageType,
    ThreadType,
    UserConnection,
    UserEdge,
    user_type,
)
from threadline.services import attachments, messages, receipts, search
from threadline.services.pagination import Page, PageRequest, id_cursor
from threadline.services.permissions import parse_id


async def _connection(info: Info, page: Page[models.Message]) -> MessageConnection:
    # A reply's parent is usually on the same page: known rows cost no query.
    op.context(info).loaders.message.prime_many({m.id: m for m in page.items})
    await _prefetch(info, page.items)
    return MessageConnection(
        edges=edges(page, MessageEdge, MessageType.of),
        page_info=page_info(page),
    )


async def _prefetch(info: Info, rows: list[models.Message]) -> None:
    """Load the batch of every selected field of the page's messages up front.

    The same batches the fields would ask for one by one, in one go: the fields
    then answer at once instead of each awaiting its loader.
    """
    wanted = selected_under(info.selected_fields, info.field_name, "edges", "node")
    if not rows or not wanted:
        return
    loaders = op.context(info).loaders
    live = [m.id for m in rows if m.deleted_at is None]
    jobs: list[Awaitable[object]] = []
    people: set[uuid.UUID] = set()
    if "author" in wanted:
        people.update(m.author_id for m in rows if m.author_id is not None)
    if "mentions" in wanted:
        people.update(
            uid for m in rows if m.deleted_at is None for uid in messages.mention_uuids(m)
        )
    preload = loaders.preload
    if people:
        jobs.append(preload(loaders.user, sorted(people)))
    if "parent" in wanted:
        jobs.append(preload(loaders.message, {m.parent_id for m in rows if m.parent_id}))
    if "replyCount" in wanted:
        jobs.append(preload(loaders.reply_count, [m.id for m in rows]))
    for name, loader in (
        ("attachments", loaders.attachments),
        ("edits", loaders.edits),
        ("reactions", loaders.reactions),
    ):
        if name in wanted:
            jobs.append(preload(loader, live))
    thread_ids = list({m.thread_id for m in rows})
    if "status" in wanted or "readBy" in wanted:
        jobs.append(preload(loaders.markers, thread_ids))
    await asyncio.gather(*jobs)
    read_by = wanted.get("readBy")
    if read_by is not None:
        # The readers each message's readBy page will show, in one more batch.
        # (strawberry gives literal arguments as written: an Int arrives as text)
        first, after = read_by.arguments.get("first"), read_by.arguments.get("after")
        try:
            size = page_args(int(str(first)) if str(first).isdigit() else None, None).size
        except BadInput:  # the field itself will say so
            return
        if after is not None:
            return
        markers = dict(zip(thread_ids, await loaders.markers.load_many(thread_ids), strict=True))
        readers: set[uuid.UUID] = set()
        for m in rows:
            readers.update(receipts.readers(m, markers[m.thread_id])[:size])
        if readers:
            await preload(loaders.user, sorted(readers))


async def thread_messages(
    info: Info, thread: models.Thread, request: PageRequest
) -> MessageConnection:
    page = await messages.thread_messages(await op.session(info), thread.id, request)
    await _delivered(info, thread.id, page.items)
    return await _connection(info, page)


async def _delivered(info: Info, thread_id: uuid.UUID, rows: list[models.Message]) -> None:
    """Fetching messages delivers them: move the viewer's marker if it is behind."""
    if not rows:
        return
    ctx = op.context(info)
    mine = await ctx.loaders.my_participation.load(thread_id)
    newest = max(m.seq for m in rows)
    if mine is not None and mine.last_delivered_seq < newest:
        db, user_id = ctx.runtime.db, mine.user_id
        ctx.after_close(lambda: receipts.mark_delivered(db, user_id, thread_id, newest))


async def replies(info: Info, parent: models.Message, request: PageRequest) -> MessageConnection:
    page = await messages.replies(await op.session(info), parent, request)
    return await _connection(info, page)


def read_by(
    info: Info, message: models.Message, first: int | None, after: str | None
) -> UserConnection | Awaitable[UserConnection]:
    request = page_args(first, after)
    loaders = op.context(info).loaders

    def page_of(markers: list[receipts.Marker]) -> object:
        ids = receipts.readers(message, markers)
        start = 0
        if request.after:
            key = request.after_key()
            start = next((i + 1 for i, uid in enumerate(ids) if [str(uid)] == key), len(ids))
        chosen = ids[start : start + request.size]

        def connection(rows: list[models.User | None]) -> UserConnection:
            users = [r for r in rows if r is not None]
            cursors = [id_cursor(u.id) for u in users]
            built = loaders.user_types
            return UserConnection(
                edges=[
                    UserEdge(cursor=c, node=user_type(built, u))
                    for c, u in zip(cursors, users, strict=True)
                ],
                page_info=PageInfo(
                    has_next_page=start + request.size < len(ids),
                    has_previous_page=start > 0,
                    start_cursor=cursors[0] if cursors else None,
                    end_cursor=cursors[-1] if cursors else None,
                ),
            )

        return many_now_or_later(loaders.user, chosen, connection)

    return settled(now_or_later(loaders.markers, message.thread_id, page_of))  # type: ignore[no-any-return]


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
        return await thread_messages(info, thread, page_args(first, after, last, before))

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
            page_args(first, after),
        )
        return await _connection(info, page)


@strawberry.type
class MessageMutations:
    # The write itself checks the role, under the lock that orders the thread's
    # messages: the same rule as the directive, in one round trip, and race-free.
    @strawberry.mutation(extensions=[thread_role(ThreadRole.MEMBER, checked_by_write=True)])
    async def send_message(self, info: Info, input: SendMessageInput) -> MessageType:
        viewer = await op.limit(info, Action.SEND_MESSAGE)
        ctx = op.context(info)
        await ctx.before_write()
        message = await messages.send_message(
            ctx.runtime.db,
            viewer,
            input.thread_id,
            input.body,
            parent_id=input.parent_id,
            client_id=input.client_id,
            attachment_ids=input.attachment_ids or [],
        )
        ctx.after_write()
        return MessageType.of(message)

    @strawberry.mutation(
        description="Only the author may edit. The previous body is kept as a MessageEdit.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def edit_message(self, info: Info, message_id: ID, body: str) -> MessageType:
        async with op.writing(info, "edit_message") as (uow, viewer):
            row = await messages.edit_message(uow, viewer, message_id, body)
        return MessageType.of(row)

    @strawberry.mutation(
        description="The author, or a thread ADMIN (moderation), may delete.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def delete_message(self, info: Info, message_id: ID) -> MessageType:
        async with op.writing(info, "delete_message") as (uow, viewer):
            row = await messages.delete_message(uow, viewer, message_id)
        return MessageType.of(row)

    @strawberry.mutation(extensions=[thread_role(ThreadRole.ADMIN)])
    async def pin_message(self, info: Info, message_id: ID, pinned: bool) -> MessageType:
        async with op.writing(info, "pin_message") as (uow, viewer):
            row = await messages.pin_message(uow, viewer, message_id, pinned)
        return MessageType.of(row)

    @strawberry.mutation(
        description="Adding the same emoji twice is a no-op.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def add_reaction(self, info: Info, message_id: ID, emoji: str) -> MessageType:
        async with op.writing(info, "add_reaction") as (uow, viewer):
            row = await messages.add_reaction(uow, viewer, message_id, emoji)
        return MessageType.of(row)

    @strawberry.mutation(extensions=[thread_role(ThreadRole.MEMBER)])
    async def remove_reaction(self, info: Info, message_id: ID, emoji: str) -> MessageType:
        async with op.writing(info, "remove_reaction") as (uow, viewer):
            row = await messages.remove_reaction(uow, viewer, message_id, emoji)
        return MessageType.of(row)

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
        viewer = await op.limit(info, Action.UPLOAD)
        ctx = op.context(info)
        await ctx.before_write()
        row = await attachments.upload_attachment(
            ctx.runtime.db,
            ctx.runtime.storage,
            viewer,
            thread_id,
            upload,
            max_bytes=ctx.runtime.settings.max_upload_bytes,
        )
        ctx.after_write()
        return AttachmentType.of(row)

    @strawberry.mutation(
        description="Moves the caller's read marker forward (never back) and returns the thread.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def mark_read(self, info: Info, thread_id: ID, seq: int) -> ThreadType:
        access = op.checked_access(info, thread_id)
        async with op.writing(info, "mark_read") as (uow, viewer):
            await receipts.mark_read(uow, viewer, access, seq)
        return ThreadType.of(access.thread)

    @strawberry.mutation(
        description="Announces that the caller starts or stops typing; expires by itself.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def set_typing(self, info: Info, thread_id: ID, is_typing: bool) -> bool:
        viewer = await op.limit(info, Action.SET_TYPING)
        access = op.checked_access(info, thread_id)
        await op.context(info).runtime.typing.set(access.thread.id, viewer.id, is_typing)
        return True
