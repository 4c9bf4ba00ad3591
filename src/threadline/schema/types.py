"""GraphQL object types for users, threads, messages and notifications.

Each wraps a storage row; fields that fan out go through the operation's DataLoaders.
"""

from __future__ import annotations

import asyncio
import bisect
import uuid
from collections.abc import Awaitable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import strawberry
from strawberry import ID, Info, Private
from strawberry.scalars import JSON

from threadline import models
from threadline.errors import BadInput, NotFound
from threadline.schema.connections import Connection, Edge, PageInfo, connection
from threadline.schema.enums import (
    AttachmentKind,
    MessageStatus,
    NotificationKind,
    PresenceStatus,
    SystemRole,
    ThreadRole,
)
from threadline.schema.resolving import many_now_or_later, now_or_later, selected_under, settled
from threadline.schema.viewer_fields import READS_VIEWER
from threadline.services import messages as message_service
from threadline.services import previews, receipts
from threadline.services import threads as thread_service
from threadline.services.pagination import Page, PageRequest, id_cursor, id_key
from threadline.services.permissions import effective_thread_role

if TYPE_CHECKING:
    from threadline.schema.context import Context


def _ctx(info: Info) -> Context:
    return info.context  # type: ignore[no-any-return]


# Every field that leads into a thread's content reads it through this, when it reads:
# the thread loader answers only threads the viewer may read now (permissions.grant),
# whichever object the path started from.
async def readable_thread(info: Info, thread_id: uuid.UUID) -> models.Thread | None:
    ctx = _ctx(info)
    known = ctx.access.get(thread_id)  # checked in this operation already: no wait
    if known is not None:
        return known.thread
    return await ctx.loaders.thread.load(thread_id)


async def _thread_or_not_found(info: Info, thread_id: uuid.UUID) -> models.Thread:
    thread = await readable_thread(info, thread_id)
    if thread is None:
        raise NotFound("Thread not found")
    return thread


async def _readable_message(info: Info, message_id: uuid.UUID | None) -> MessageType | None:
    if message_id is None:
        return None
    row = await _ctx(info).loaders.message.load(message_id)
    if row is None or await readable_thread(info, row.thread_id) is None:
        return None
    return MessageType.of(row)


async def load_user(info: Info, user_id: uuid.UUID | None) -> UserType | None:
    if user_id is None:
        return None
    row = await _ctx(info).loaders.user.load(user_id)
    return UserType.of(row) if row is not None else None


async def load_existing_user(info: Info, user_id: uuid.UUID) -> UserType:
    row = await _ctx(info).loaders.user.load(user_id)
    assert row is not None
    return UserType.of(row)


@strawberry.interface(name="Node")
class Node:
    id: ID


@strawberry.type(name="Presence")
class PresenceType:
    status: PresenceStatus
    last_seen_at: datetime | None


@strawberry.type(name="User")
class UserType(Node):
    row: Private[models.User]
    id: ID
    clerk_id: str = strawberry.field(
        description="The Clerk user id: the source of truth for identity."
    )
    username: str | None
    display_name: str
    image_url: str | None
    role: SystemRole
    deleted_at: datetime | None = strawberry.field(
        description="Set when the user was deleted in Clerk; their messages stay, anonymised."
    )
    created_at: datetime

    @classmethod
    def of(cls, row: models.User) -> UserType:
        return cls(
            row=row,
            id=ID(str(row.id)),
            clerk_id=row.clerk_id,
            username=row.username,
            display_name=row.display_name,
            image_url=row.image_url,
            role=row.system_role,
            deleted_at=row.deleted_at,
            created_at=row.created_at,
        )

    @strawberry.field
    async def presence(self, info: Info) -> PresenceType:
        state = await _ctx(info).loaders.presence.load((self.row.id, self.row.last_seen_at))
        return PresenceType(status=state.status, last_seen_at=state.last_seen_at)

    @strawberry.field(description="Null unless this is the signed-in user.", metadata=READS_VIEWER)
    async def preferences(self, info: Info) -> JSON | None:
        viewer = _ctx(info).viewer_or_none
        if viewer is None or viewer.id != self.row.id:
            return None
        return JSON(self.row.preferences or {})


UserConnection = Connection[UserType]


@strawberry.type(name="ThreadParticipant")
class ParticipantType:
    row: Private[models.ThreadParticipant]
    role: ThreadRole
    joined_at: datetime
    last_read_seq: int
    last_delivered_seq: int

    @classmethod
    def of(cls, row: models.ThreadParticipant) -> ParticipantType:
        return cls(
            row=row,
            role=row.thread_role,
            joined_at=row.joined_at,
            last_read_seq=row.last_read_seq,
            last_delivered_seq=row.last_delivered_seq,
        )

    @strawberry.field
    async def user(self, info: Info) -> UserType:
        return await load_existing_user(info, self.row.user_id)


@strawberry.type(name="ParticipantEdge")  # not the default ThreadParticipantEdge
class ParticipantEdge(Edge[ParticipantType]):
    pass


@strawberry.type(name="ParticipantConnection")
class ParticipantConnection:
    edges: list[ParticipantEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type(name="Thread")
class ThreadType(Node):
    row: Private[models.Thread]
    id: ID
    title: str
    description: str | None
    is_direct: bool = strawberry.field(
        description="A direct conversation between exactly two users."
    )
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime | None
    last_seq: int = strawberry.field(
        description="The sequence number of the newest event in this thread (0 when empty)."
    )

    @classmethod
    def of(cls, row: models.Thread) -> ThreadType:
        return cls(
            row=row,
            id=ID(str(row.id)),
            title=row.title,
            description=row.description,
            is_direct=row.is_direct,
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_message_at=row.last_message_at,
            last_seq=row.last_seq,
        )

    async def _mine(self, info: Info) -> models.ThreadParticipant | None:
        return await _ctx(info).loaders.my_participation.load(self.row.id)

    @strawberry.field
    async def created_by(self, info: Info) -> UserType | None:
        return await load_user(info, self.row.created_by_id)

    @strawberry.field
    async def last_message(self, info: Info) -> MessageType | None:
        if await readable_thread(info, self.row.id) is None:
            return None
        return _message_or_none(await _ctx(info).loaders.last_message.load(self.row.id))

    @strawberry.field(
        description="The signed-in user's effective role (system roles inherited).",
        metadata=READS_VIEWER,
    )
    async def my_role(self, info: Info) -> ThreadRole:
        viewer = await _ctx(info).viewer()
        mine = await self._mine(info)
        role = effective_thread_role(viewer.system_role, mine.thread_role if mine else None)
        return role or ThreadRole.MEMBER

    @strawberry.field(
        description="Messages after the signed-in user's read marker, not counting their own.",
        metadata=READS_VIEWER,
    )
    async def unread_count(self, info: Info) -> int:
        return await _ctx(info).loaders.unread_count.load(self.row.id)

    @strawberry.field(description="The signed-in user's read marker.", metadata=READS_VIEWER)
    async def last_read_seq(self, info: Info) -> int:
        mine = await self._mine(info)
        return mine.last_read_seq if mine else 0

    @strawberry.field(metadata=READS_VIEWER)
    async def muted(self, info: Info) -> bool:
        mine = await self._mine(info)
        return bool(mine and mine.muted)

    @strawberry.field
    async def participants(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> ParticipantConnection:
        thread = await _thread_or_not_found(info, self.row.id)
        page, total = await thread_service.participants_page(
            await _ctx(info).session(), thread.id, PageRequest(first, after)
        )
        return connection(ParticipantConnection, page, ParticipantType.of, total_count=total)

    # Acts for the viewer: fetching a page moves their delivered marker.
    @strawberry.field(metadata=READS_VIEWER)
    async def messages(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> MessageConnection:
        thread = await _thread_or_not_found(info, self.row.id)
        return await thread_messages(info, thread, PageRequest(first, after, last, before))

    @strawberry.field(
        description=f"At most {message_service.MAX_PINNED}, most recently pinned first."
    )
    async def pinned_messages(self, info: Info) -> list[MessageType]:
        await _thread_or_not_found(info, self.row.id)
        rows = await _ctx(info).loaders.pinned.load(self.row.id)
        return [MessageType.of(r) for r in rows]


ThreadConnection = Connection[ThreadType]


@strawberry.type(name="MessageEdit")
class MessageEditType:
    row: Private[models.MessageEdit]
    id: ID
    previous_body: str = strawberry.field(description="The body as it was before this edit.")
    edited_at: datetime

    @strawberry.field
    async def edited_by(self, info: Info) -> UserType | None:
        return await load_user(info, self.row.edited_by_id)


@strawberry.type(name="ReactionGroup")
class ReactionGroupType:
    group: Private[message_service.ReactionGroup]
    emoji: str
    count: int

    @strawberry.field(metadata=READS_VIEWER)
    async def reacted_by_me(self, info: Info) -> bool:
        viewer = await _ctx(info).viewer()
        return viewer.id in self.group.user_ids

    @strawberry.field(description="Up to the first 20 users who reacted with this emoji.")
    def users(self, info: Info) -> list[UserType]:
        loaders = _ctx(info).loaders
        return many_now_or_later(  # type: ignore[return-value]
            loaders.user, self.group.first_user_ids, partial(_users, loaders.user_types)
        )


def reaction_groups(groups: list[message_service.ReactionGroup]) -> list[ReactionGroupType]:
    return [ReactionGroupType(group=g, emoji=g.emoji, count=g.count) for g in groups]


def user_type(built: dict[uuid.UUID, UserType], row: models.User) -> UserType:
    """The operation's one UserType of a row: a page shows the same people many times."""
    found = built.get(row.id)
    if found is None:
        found = built[row.id] = UserType.of(row)
    return found


def _live_user(built: dict[uuid.UUID, UserType], row: models.User | None) -> UserType | None:
    return user_type(built, row) if row is not None and row.deleted_at is None else None


def _users(
    built: dict[uuid.UUID, UserType], rows: list[models.User | None], *, live: bool = False
) -> list[UserType]:
    return [user_type(built, r) for r in rows if r is not None and not (live and r.deleted_at)]


def _message_or_none(row: models.Message | None) -> MessageType | None:
    return MessageType.of(row) if row is not None else None


def _attachments(rows: list[models.Attachment]) -> list[AttachmentType]:
    return [AttachmentType.of(r) for r in rows]


def _edits(rows: list[models.MessageEdit]) -> list[MessageEditType]:
    return [
        MessageEditType(
            row=r, id=ID(str(r.id)), previous_body=r.previous_body, edited_at=r.edited_at
        )
        for r in rows
    ]


SHOWN_SIZE = "Of an image, in pixels as shown: turned as its EXIF orientation says."


@strawberry.type(name="Attachment")
class AttachmentType(Node):
    row: Private[models.Attachment]
    id: ID
    filename: str
    content_type: str = strawberry.field(
        description="Detected from the file's content, not taken from the client."
    )
    size: int
    kind: AttachmentKind
    width: int | None = strawberry.field(description=SHOWN_SIZE)
    height: int | None = strawberry.field(description=SHOWN_SIZE)
    created_at: datetime

    @classmethod
    def of(cls, row: models.Attachment) -> AttachmentType:
        return cls(
            row=row,
            id=ID(str(row.id)),
            filename=row.filename,
            content_type=row.content_type,
            size=row.size,
            kind=AttachmentKind(row.kind),
            width=row.width,
            height=row.height,
            created_at=row.created_at,
        )

    @strawberry.field(
        description="A signed, expiring URL to download the file.", metadata=READS_VIEWER
    )
    async def url(self, info: Info) -> str:
        ctx = _ctx(info)
        return ctx.runtime.attachment_url(self.row, ctx.origin, (await ctx.viewer()).id)

    @strawberry.field(
        description=(
            f"A signed, expiring URL of a WebP at most {previews.PREVIEW_SIDE} pixels on its "
            "longer side, turned as the image's EXIF orientation says, to show inline; null "
            "when the image is that small already and shown as stored, or is no image."
        ),
        metadata=READS_VIEWER,
    )
    async def preview_url(self, info: Info) -> str | None:
        if self.row.preview_key is None:
            return None
        ctx = _ctx(info)
        viewer = (await ctx.viewer()).id
        return ctx.runtime.attachment_url(self.row, ctx.origin, viewer, preview=True)

    @strawberry.field
    async def uploaded_by(self, info: Info) -> UserType | None:
        return await load_user(info, self.row.uploaded_by_id)

    @strawberry.field(description="Null until a message uses it.")
    async def message(self, info: Info) -> MessageType | None:
        return await _readable_message(info, self.row.message_id)


@strawberry.type(name="Message")
class MessageType(Node):
    row: Private[models.Message]
    id: ID
    seq: int = strawberry.field(
        description="Position in the thread's event log; strictly increasing, never reused."
    )
    body: str = strawberry.field(description="Plain text. Empty when the message is deleted.")
    client_id: str | None = strawberry.field(
        description="The client's idempotency key, echoed back."
    )
    edited_at: datetime | None
    deleted_at: datetime | None
    pinned: bool
    created_at: datetime

    @classmethod
    def of(cls, row: models.Message) -> MessageType:
        deleted = row.deleted_at is not None
        return cls(
            row=row,
            id=ID(str(row.id)),
            seq=row.seq,
            body="" if deleted else row.body,
            client_id=row.client_id,
            edited_at=row.edited_at,
            deleted_at=row.deleted_at,
            pinned=row.pinned,
            created_at=row.created_at,
        )

    @strawberry.field
    async def thread(self, info: Info) -> ThreadType:
        return ThreadType.of(await _thread_or_not_found(info, self.row.thread_id))

    # The fields below that fan out are plain functions: they answer at once
    # when the page resolver loaded their batch, and await the loader otherwise.

    @strawberry.field(description="Null when the author was deleted.")
    def author(self, info: Info) -> UserType | None:
        if self.row.author_id is None:
            return None
        loaders = _ctx(info).loaders
        return now_or_later(  # type: ignore[return-value]
            loaders.user, self.row.author_id, partial(_live_user, loaders.user_types)
        )

    @strawberry.field(description="The message this one replies to (threaded conversation).")
    def parent(self, info: Info) -> MessageType | None:
        if self.row.parent_id is None:
            return None
        ctx = _ctx(info)
        if self.row.thread_id in ctx.access:  # a checked thread: its page preloaded parents
            return now_or_later(  # type: ignore[return-value]
                ctx.loaders.message, self.row.parent_id, _message_or_none
            )
        return _readable_message(info, self.row.parent_id)  # type: ignore[return-value]

    @strawberry.field
    def reply_count(self, info: Info) -> int:
        return now_or_later(_ctx(info).loaders.reply_count, self.row.id, int)  # type: ignore[return-value]

    @strawberry.field
    async def replies(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> MessageConnection:
        await _thread_or_not_found(info, self.row.thread_id)
        request = PageRequest(first, after, last, before)
        page = await message_service.replies(await _ctx(info).session(), self.row, request)
        return await message_connection(info, page)

    @strawberry.field
    def attachments(self, info: Info) -> list[AttachmentType]:
        if self.row.deleted_at is not None:
            return []
        return now_or_later(  # type: ignore[return-value]
            _ctx(info).loaders.attachments, self.row.id, _attachments
        )

    @strawberry.field
    def reactions(self, info: Info) -> list[ReactionGroupType]:
        if self.row.deleted_at is not None:
            return []
        return now_or_later(  # type: ignore[return-value]
            _ctx(info).loaders.reactions, self.row.id, reaction_groups
        )

    @strawberry.field(
        description="Earlier versions, oldest first: the newest "
        f"{message_service.EDITS_SHOWN} edits at most."
    )
    def edits(self, info: Info) -> list[MessageEditType]:
        if self.row.deleted_at is not None:
            return []
        return now_or_later(_ctx(info).loaders.edits, self.row.id, _edits)  # type: ignore[return-value]

    @strawberry.field
    def mentions(self, info: Info) -> list[UserType]:
        if self.row.deleted_at is not None or not self.row.mention_ids:
            return []
        ids = message_service.mention_uuids(self.row)
        loaders = _ctx(info).loaders
        return many_now_or_later(  # type: ignore[return-value]
            loaders.user, ids, partial(_users, loaders.user_types, live=True)
        )

    @strawberry.field
    def status(self, info: Info) -> MessageStatus:
        row = self.row
        return now_or_later(  # type: ignore[return-value]
            _ctx(info).loaders.markers,
            row.thread_id,
            lambda markers: receipts.message_status(row, markers),
        )

    @strawberry.field
    def read_by(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> UserConnection:
        request = PageRequest(first, after)
        loaders = _ctx(info).loaders
        message = self.row

        def page_of(markers: list[receipts.Marker]) -> object:
            ids = receipts.readers(message, markers)
            after = request.after_key()
            # After the cursor's place in the sorted ids, not its item: that reader may have left.
            start = bisect.bisect_right(ids, id_key(after)) if after is not None else 0
            chosen = ids[start : start + request.size]
            has_next = start + request.size < len(ids)

            def users_page(rows: list[models.User | None]) -> UserConnection:
                users = [r for r in rows if r is not None]
                page = Page(users, [id_cursor(u.id) for u in users], has_next, start > 0)
                return connection(UserConnection, page, partial(user_type, loaders.user_types))

            return many_now_or_later(loaders.user, chosen, users_page)

        return settled(now_or_later(loaders.markers, message.thread_id, page_of))  # type: ignore[no-any-return]


MessageConnection = Connection[MessageType]


@strawberry.type(name="Notification")
class NotificationType(Node):
    row: Private[models.Notification]
    id: ID
    kind: NotificationKind
    read_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, row: models.Notification) -> NotificationType:
        return cls(
            row=row,
            id=ID(str(row.id)),
            kind=NotificationKind(row.kind),
            read_at=row.read_at,
            created_at=row.created_at,
        )

    @strawberry.field
    async def actor(self, info: Info) -> UserType | None:
        return await load_user(info, self.row.actor_id)

    # Thread and message are null once the recipient may no longer read the thread:
    # leaving the notification out would make the list disagree with its unreadCount
    # and hide ids that markNotificationsRead accepts.

    @strawberry.field
    async def thread(self, info: Info) -> ThreadType | None:
        if self.row.thread_id is None:
            return None
        row = await readable_thread(info, self.row.thread_id)
        return ThreadType.of(row) if row is not None else None

    @strawberry.field
    async def message(self, info: Info) -> MessageType | None:
        return await _readable_message(info, self.row.message_id)


@strawberry.type(name="NotificationConnection")
class NotificationConnection(Connection[NotificationType]):
    unread_count: int


@strawberry.type(
    name="Session",
    description="A live WebSocket connection (or a recent one) of the signed-in user.",
)
class SessionType(Node):
    id: ID
    clerk_session_id: str | None = strawberry.field(
        description="The Clerk session id (the token's `sid`)."
    )
    user_agent: str | None
    connected_at: datetime
    last_seen_at: datetime
    disconnected_at: datetime | None

    @classmethod
    def of(cls, row: models.Session) -> SessionType:
        return cls(
            id=ID(str(row.id)),
            clerk_session_id=row.clerk_session_id,
            user_agent=row.user_agent,
            connected_at=row.connected_at,
            last_seen_at=row.last_seen_at,
            disconnected_at=row.disconnected_at,
        )


# Pages a type's field answers (the root queries reuse the message pages).
async def message_connection(info: Info, page: Page[models.Message]) -> MessageConnection:
    # A reply's parent is usually on the same page: known rows cost no query.
    _ctx(info).loaders.message.prime_many({m.id: m for m in page.items})
    await _prefetch(info, page.items)
    return connection(MessageConnection, page, MessageType.of)


async def _prefetch(info: Info, rows: list[models.Message]) -> None:
    """Load the batch of every selected field of the page's messages up front: the
    fields then answer at once instead of each awaiting its loader."""
    wanted = selected_under(info.selected_fields, info.field_name, "edges", "node")
    if not rows or not wanted:
        return
    loaders = _ctx(info).loaders
    live = [m.id for m in rows if m.deleted_at is None]
    jobs: list[Awaitable[object]] = []
    people: set[uuid.UUID] = set()
    if "author" in wanted:
        people.update(m.author_id for m in rows if m.author_id is not None)
    if "mentions" in wanted:
        people.update(
            uid for m in rows if m.deleted_at is None for uid in message_service.mention_uuids(m)
        )
    preload = loaders.preload
    if people:
        jobs.append(preload(loaders.user, sorted(people)))
    if "parent" in wanted:
        jobs.append(preload(loaders.message, {m.parent_id for m in rows if m.parent_id}))
    if "replyCount" in wanted:
        jobs.append(preload(loaders.reply_count, [m.id for m in rows]))
    if "attachments" in wanted:
        jobs.append(preload(loaders.attachments, live))
    if "edits" in wanted:
        jobs.append(preload(loaders.edits, live))
    if "reactions" in wanted:
        jobs.append(preload(loaders.reactions, live))
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
            size = PageRequest(int(str(first)) if str(first).isdigit() else None).size
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
    ctx = _ctx(info)
    page = await message_service.thread_messages(await ctx.session(), thread.id, request)
    if page.items:  # fetching messages delivers them: move the viewer's marker if it is behind
        mine = await ctx.loaders.my_participation.load(thread.id)
        newest = max(m.seq for m in page.items)
        if mine is not None and mine.last_delivered_seq < newest:
            db, key = ctx.runtime.db, (mine.user_id, thread.id)
            ctx.after_close(lambda: receipts.mark_delivered_many(db, {key: newest}))
    return await message_connection(info, page)
