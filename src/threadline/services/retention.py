"""The periodic clean-up: unreachable attachments, and records past their retention.
Each batch's transaction first takes one deployment-wide lock, so when several
processes serve one deployment exactly one sweeps at a time."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete

from threadline.db import Database, rowcount, try_transaction_lock
from threadline.models import EndedClerkSession, Session, utcnow
from threadline.services import attachments, clerk_sync
from threadline.uploads.storage import Storage

log = logging.getLogger(__name__)

# An arbitrary constant of our own: the advisory lock's key, shared by all processes.
SWEEP_LOCK_KEY = 0x7468_726C_7377_6570  # "thrlswep"
SWEEP_BATCH = 500
# WebSocket session records are history for operators; ended Clerk sessions
# refuse tokens of those sessions, which live 60 seconds: a month is ample for both.
SESSION_RETENTION = timedelta(days=30)
SWEEP_INTERVAL_SECONDS = 600.0


@dataclass(slots=True)
class SweepReport:
    attachments: int = 0
    webhook_deliveries: int = 0
    sessions: int = 0
    ended_clerk_sessions: int = 0
    # Another process held the lock: it does the work this time.
    skipped: bool = False

    @property
    def removed(self) -> int:
        return (
            self.attachments + self.webhook_deliveries + self.sessions + self.ended_clerk_sessions
        )


async def sweep(db: Database, storage: Storage, *, now: datetime | None = None) -> SweepReport:
    """One clean-up pass; safe to run in every process (only the lock holder works)."""
    now = now or utcnow()
    report = SweepReport()
    while True:
        async with db.transaction("sweep_attachments") as uow:
            if not await try_transaction_lock(uow, SWEEP_LOCK_KEY):
                report.skipped = True
                return report
            doomed = await attachments.unreachable(uow.session, now=now, limit=SWEEP_BATCH)
            # Files first: if the commit then fails, the rows stay unreachable and the
            # next pass deletes them; the other order could leave files no row names.
            for _, keys in doomed:
                for key in keys:
                    await storage.delete(key)
            await attachments.forget(uow.session, [aid for aid, _ in doomed])
        report.attachments += len(doomed)
        if len(doomed) < SWEEP_BATCH:
            break
    async with db.transaction("prune_records") as uow:
        if not await try_transaction_lock(uow, SWEEP_LOCK_KEY):
            report.skipped = True
            return report
        report.webhook_deliveries = await clerk_sync.prune_webhook_deliveries(uow, now=now)
        cutoff = now - SESSION_RETENTION
        # A live socket touches last_seen_at every minute; a row silent for a month is
        # closed, or was left open by a process that died.
        sessions = await uow.session.execute(delete(Session).where(Session.last_seen_at < cutoff))
        ended = await uow.session.execute(
            delete(EndedClerkSession).where(EndedClerkSession.ended_at < cutoff)
        )
        report.sessions, report.ended_clerk_sessions = rowcount(sessions), rowcount(ended)
    return report


async def sweep_forever(
    db: Database, storage: Storage, interval: float = SWEEP_INTERVAL_SECONDS
) -> None:
    """Runs for the process's lifetime: a sweep every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval)
        try:
            report = await sweep(db, storage)
        except Exception:
            log.warning("the retention sweep failed; retrying next interval", exc_info=True)
            continue
        if report.removed:
            log.info("retention sweep: %s", report)
