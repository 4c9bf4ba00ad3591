"""The retention sweep: unused and unreachable attachments (rows and files), old Svix
ids and old session records go; what is still in use stays; one process at a time."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from tests import factories
from tests.conftest import BACKEND, Clients, Server
from tests.uploads import image, stored_files, upload
from threadline.config import Settings
from threadline.models import (
    Attachment,
    EndedClerkSession,
    Session,
    WebhookDelivery,
    utcnow,
)
from threadline.services import retention


async def _attachment_ids(server: Server) -> set[str]:
    async with server.runtime.db.reading() as session:
        return {str(i) for i in await session.scalars(select(Attachment.id))}


async def _sweep(server: Server, hours: float = 0) -> retention.SweepReport:
    runtime = server.runtime
    return await retention.sweep(runtime.db, runtime.storage, now=utcnow() + timedelta(hours=hours))


async def test_unused_uploads_go_after_a_day_and_sent_ones_stay(
    clients: Clients, server: Server, settings: Settings
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    unused = await upload(alice, tid, "unused.png", image())
    sent = await upload(alice, tid, "sent.png", image())
    await factories.send(alice, tid, "here", attachmentIds=[sent["id"]])

    report = await _sweep(server, hours=23)
    assert report.attachments == 0
    assert await _attachment_ids(server) == {unused["id"], sent["id"]}

    report = await _sweep(server, hours=25)
    assert report.attachments == 1 and not report.skipped
    assert await _attachment_ids(server) == {sent["id"]}
    assert len(stored_files(settings.upload_dir)) == 1


async def test_deleting_a_message_or_thread_removes_its_attachments(
    clients: Clients, server: Server, settings: Settings
) -> None:
    alice = await clients.user("alice")
    tid, other = await factories.thread(alice), await factories.thread(alice, title="Other")
    doomed = await upload(alice, tid, "a.png", image())
    message = await factories.send(alice, tid, "x", attachmentIds=[doomed["id"]])
    in_thread = await upload(alice, other, "b.png", image())
    await factories.send(alice, other, "y", attachmentIds=[in_thread["id"]])
    kept = await upload(alice, tid, "c.png", image())
    await factories.send(alice, tid, "z", attachmentIds=[kept["id"]])

    await alice.gql(
        "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }", {"m": message["id"]}
    )
    await alice.gql("mutation($t: ID!) { deleteThread(threadId: $t) }", {"t": other})
    report = await _sweep(server)
    assert report.attachments == 2
    assert await _attachment_ids(server) == {kept["id"]}
    assert len(stored_files(settings.upload_dir)) == 1


async def test_old_svix_ids_and_session_records_are_pruned(
    clients: Clients, server: Server
) -> None:
    alice = await clients.user("alice")
    now = utcnow()
    async with server.runtime.db.transaction("seed_old_records") as uow:
        for name, age in (("old", 11), ("recent", 6)):  # days; sessions: thrice that
            uow.session.add(
                WebhookDelivery(
                    svix_id=f"msg_{name}",
                    event_type="user.updated",
                    received_at=now - timedelta(days=age),
                )
            )
            uow.session.add(
                EndedClerkSession(
                    clerk_session_id=f"sess_{name}",
                    reason="ended",
                    ended_at=now - timedelta(days=age * 3),
                )
            )
            uow.session.add(
                Session(
                    user_id=uuid.UUID(alice.id),
                    connected_at=now - timedelta(days=age * 3),
                    last_seen_at=now - timedelta(days=age * 3),
                    disconnected_at=now - timedelta(days=age * 3),
                )
            )
    report = await _sweep(server)
    assert (report.webhook_deliveries, report.sessions, report.ended_clerk_sessions) == (1, 1, 1)
    async with server.runtime.db.reading() as session:
        assert list(await session.scalars(select(WebhookDelivery.svix_id))) == ["msg_recent"]
        assert list(await session.scalars(select(EndedClerkSession.clerk_session_id))) == [
            "sess_recent"
        ]
        assert await session.scalar(select(func.count()).select_from(Session)) == 1


@pytest.mark.skipif(BACKEND != "postgres", reason="the lock is PostgreSQL's advisory lock")
async def test_only_one_process_sweeps_at_a_time(
    clients: Clients, server: Server, settings: Settings
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    unused = await upload(alice, tid, "unused.png", image())
    # Another process's sweep holds the lock in its open transaction.
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.connect() as other, other.begin():
            held = await other.scalar(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": retention.SWEEP_LOCK_KEY}
            )
            assert held
            report = await _sweep(server, hours=25)
            assert report.skipped and report.attachments == 0
            assert await _attachment_ids(server) == {unused["id"]}
        # Its transaction ended: the lock went with it, without an unlock call.
        report = await _sweep(server, hours=25)
        assert not report.skipped and report.attachments == 1
    finally:
        await engine.dispose()
