"""Attachments: who may upload, what is accepted, and what is downloadable. Those that
nothing may reach any more (unused for a day, or of a deleted message or thread) are
found here and removed by the retention sweep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import BinaryIO, Protocol

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.db import Database, rowcount
from threadline.errors import NotFound, PayloadTooLarge
from threadline.models import (
    Attachment,
    AttachmentKind,
    Message,
    Thread,
    ThreadRole,
    User,
    utcnow,
)
from threadline.services import content_types, previews
from threadline.services.permissions import access_attachment, access_thread
from threadline.uploads.storage import CHUNK_BYTES, Storage, StoredFile, TooLarge

log = logging.getLogger(__name__)

# An upload that no message uses within this long is deleted.
UNUSED_LIFETIME = timedelta(hours=24)


class UploadSource(Protocol):
    """What the transport hands over: a seekable file the client sent (Starlette's
    UploadFile has this shape) with the name the client gave it."""

    filename: str | None
    file: BinaryIO

    async def read(self, size: int = -1) -> bytes: ...

    async def seek(self, offset: int) -> None: ...


async def upload_attachment(
    db: Database,
    storage: Storage,
    actor: User,
    thread_id: str,
    source: UploadSource,
    *,
    max_bytes: int,
    render_preview: bool = True,
) -> Attachment:
    """Store a file for a later sendMessage in ``thread_id`` (the actor a participant),
    copied while counted, its type then decided from the bytes: PAYLOAD_TOO_LARGE past
    ``max_bytes``, BAD_USER_INPUT for a refused type, and in every refusal nothing kept."""
    try:
        stored = await storage.save(_chunks(source), max_bytes=max_bytes)
    except TooLarge:
        raise PayloadTooLarge(
            f"The file is larger than {max_bytes} bytes", maxBytes=max_bytes
        ) from None
    preview: StoredFile | None = None
    try:
        detected = await asyncio.to_thread(content_types.detect, source.file)
        if (
            render_preview
            and detected.kind is AttachmentKind.IMAGE
            and previews.wanted(detected.width, detected.height, detected.orientation)
        ):
            rendered = None
            with contextlib.suppress(previews.RendererBusy):  # the upload stands without
                rendered = await previews.render(source.file)
            if rendered is not None:
                preview = await storage.save(_one(rendered), max_bytes=len(rendered))
        async with db.transaction("upload_attachment") as uow:
            access = await access_thread(uow.session, actor, thread_id, ThreadRole.MEMBER)
            row = Attachment(
                id=uuid.uuid4(),
                thread_id=access.thread.id,
                uploaded_by_id=actor.id,
                filename=content_types.safe_filename(source.filename, detected.content_type),
                content_type=detected.content_type,
                size=stored.size,
                kind=detected.kind.value,
                width=detected.width,
                height=detected.height,
                storage_key=stored.key,
                preview_key=preview.key if preview is not None else None,
                created_at=utcnow(),
            )
            uow.session.add(row)
    except BaseException:
        # Shielded: a cancelled request must not leave its files behind either.
        for saved in (stored, preview):
            if saved is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(storage.delete(saved.key))
        raise
    return row


class PreviewRepairs:
    """Previews made again from their files when the preview's file is gone (a restored
    old backup, a lost disk), through the same one-at-a-time renderer. One render per
    attachment at a time in this process: concurrent readers of it share the result.
    (Two processes may each render it once; the row keeps one, the other is deleted.)"""

    def __init__(self, db: Database, storage: Storage) -> None:
        self.db = db
        self.storage = storage
        self._running: dict[uuid.UUID, asyncio.Task[StoredFile | None]] = {}

    async def remake(self, row: Attachment) -> StoredFile | None:
        """The preview of ``row``, whose ``preview_key`` names a missing file, stored
        again; None when it cannot be (the file is gone too, or no longer decodes): the
        row then forgets its preview, so previewUrl is null. RendererBusy when the
        renderer stayed busy: nothing changes, a later read tries again."""
        task = self._running.get(row.id)
        if task is None:
            task = asyncio.create_task(self._remake(row))
            self._running[row.id] = task
            task.add_done_callback(partial(self._done, row.id))
        # Shielded: a reader that goes away does not cancel the others' render.
        return await asyncio.shield(task)

    def _done(self, attachment_id: uuid.UUID, task: asyncio.Task[StoredFile | None]) -> None:
        self._running.pop(attachment_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: every reader may have gone away

    async def _remake(self, row: Attachment) -> StoredFile | None:
        rendered = None
        file = await asyncio.to_thread(tempfile.TemporaryFile)
        try:
            try:
                async for chunk in self.storage.read(row.storage_key):
                    await asyncio.to_thread(file.write, chunk)
            except OSError:
                pass  # the file is gone too
            else:
                rendered = await previews.render(file)
        finally:
            file.close()
        remade = None
        if rendered is not None:
            remade = await self.storage.save(_one(rendered), max_bytes=len(rendered))
        else:
            log.warning("attachment %s: its preview is gone and cannot be made again", row.id)
        try:
            async with self.db.transaction("remake_preview") as uow:
                # Only if nothing changed it meanwhile (another process, the sweep).
                changed = await uow.session.execute(
                    update(Attachment)
                    .where(Attachment.id == row.id, Attachment.preview_key == row.preview_key)
                    .values(preview_key=remade.key if remade is not None else None)
                )
        except BaseException:
            if remade is not None:
                await asyncio.shield(self.storage.delete(remade.key))
            raise
        if rowcount(changed) == 1:
            if row.preview_key is not None:  # gone, or unreadable for a moment: no orphan
                await self.storage.delete(row.preview_key)
            return remade
        if remade is not None:
            await self.storage.delete(remade.key)
        async with self.db.reading() as session:
            key = await session.scalar(
                select(Attachment.preview_key).where(Attachment.id == row.id)
            )
        size = await self.storage.size(key) if key is not None else None
        return StoredFile(key, size) if key is not None and size is not None else None


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _chunks(source: UploadSource) -> AsyncIterator[bytes]:
    await source.seek(0)
    while chunk := await source.read(CHUNK_BYTES):
        yield chunk


async def downloadable(session: AsyncSession, attachment_id: uuid.UUID) -> Attachment | None:
    """The attachment if it may still be served: not of a deleted message or thread."""
    row = await session.get(Attachment, attachment_id)
    if row is None or await session.scalar(
        select(Thread.deleted_at).where(Thread.id == row.thread_id)
    ):
        return None
    if row.message_id is not None and await session.scalar(
        select(Message.deleted_at).where(Message.id == row.message_id)
    ):
        return None
    return row


async def downloadable_by(
    session: AsyncSession, attachment_id: uuid.UUID, viewer_id: uuid.UUID
) -> Attachment | None:
    """The attachment if it may still be served to this viewer: a live user who can
    read its thread now (the one access check), and not of a deleted message."""
    viewer = await session.get(User, viewer_id)
    if viewer is None or viewer.deleted_at is not None:
        return None
    try:
        await access_attachment(session, viewer, attachment_id)
    except NotFound:
        return None
    return await downloadable(session, attachment_id)


async def unreachable(
    session: AsyncSession, *, now: datetime, limit: int
) -> Sequence[tuple[uuid.UUID, list[str]]]:
    """(id, storage keys) of attachments to delete: unused for UNUSED_LIFETIME, or of a
    deleted message or thread. Locked on PostgreSQL, so a concurrent send waits."""
    cutoff = now - UNUSED_LIFETIME
    # Correlated: each attachment looks up its own message and thread by primary key,
    # instead of the statement listing every deleted message of the deployment.
    message_deleted = (
        select(Message.id)
        .where(Message.id == Attachment.message_id, Message.deleted_at.is_not(None))
        .exists()
    )
    thread_deleted = (
        select(Thread.id)
        .where(Thread.id == Attachment.thread_id, Thread.deleted_at.is_not(None))
        .exists()
    )
    statement = (
        select(Attachment.id, Attachment.storage_key, Attachment.preview_key)
        .where(
            or_(
                (Attachment.message_id.is_(None)) & (Attachment.created_at < cutoff),
                message_deleted,
                thread_deleted,
            )
        )
        .limit(limit)
        .with_for_update(of=Attachment, skip_locked=True)  # SQLite has no row locks: ignored
    )
    return [
        (row.id, [key for key in (row.storage_key, row.preview_key) if key])
        for row in await session.execute(statement)
    ]


async def forget(session: AsyncSession, ids: Sequence[uuid.UUID]) -> None:
    if ids:
        await session.execute(delete(Attachment).where(Attachment.id.in_(ids)))
