"""``POST /webhooks/clerk``: Clerk's user and session events, verified with Svix.

Each Svix message id is recorded in the transaction of its change, so a retried delivery
is applied once; sockets of ended sessions close after commit (``on_sessions_ended``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from svix.webhooks import Webhook, WebhookVerificationError

from threadline.config import Settings
from threadline.db import Database, UnitOfWork
from threadline.errors import BadInput
from threadline.metrics import WEBHOOKS
from threadline.models import WebhookDelivery
from threadline.services import clerk_sync
from threadline.services.text_rules import has_unstorable_chars

log = logging.getLogger(__name__)

# Clerk's events are a few kilobytes; anything near this is not from Clerk.
MAX_BODY_BYTES = 1_048_576
SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")
USER_UPSERTS = frozenset({"user.created", "user.updated"})
SESSION_ENDINGS = frozenset({"session.ended", "session.removed", "session.revoked"})


@dataclass
class _Applied:
    outcome: str
    ended_sessions: list[str] = field(default_factory=list)
    deleted_users: list[str] = field(default_factory=list)


async def clerk_webhook(request: Request) -> Response:
    settings: Settings = request.app.state.runtime.settings
    if settings.clerk_webhook_secret is None:
        return _answer("not_configured", 503, "webhooks are off: set CLERK_WEBHOOK_SECRET")
    try:
        verifier = Webhook(settings.clerk_webhook_secret.get_secret_value())
    except Exception:
        # The library's message could quote the secret; the operator needs only this.
        log.error("CLERK_WEBHOOK_SECRET is not a valid Svix signing secret (whsec_...)")
        return _answer("not_configured", 503, "the webhook secret is misconfigured")

    body = await _read_body(request)
    if body is None:
        return _answer("too_large", 413, "request body is too large")
    headers = {name: request.headers.get(name, "") for name in SVIX_HEADERS}
    try:
        verifier.verify(body, headers)
    # A malformed signature header or a body that is not UTF-8 raises other errors.
    except (WebhookVerificationError, ValueError):
        return _answer("bad_signature", 400, "invalid or missing Svix signature")

    event = _parse_event(body)
    if event is None:
        return _answer("malformed", 400, "body is not a Clerk event")
    event_type, data = event
    svix_id = headers["svix-id"]
    if len(svix_id) > 255:
        return _answer("malformed", 400, "svix-id is too long")

    db: Database = request.app.state.runtime.db
    try:
        applied = await _apply_once(db, svix_id, event_type, data)
    except BadInput as error:
        return _answer("malformed", 400, error.message)
    except Exception:
        log.exception("applying Clerk webhook %s (%s) failed", svix_id, event_type)
        # Svix retries a 5xx later; the transaction left nothing behind.
        return _answer("error", 500, "the event could not be applied")

    log.info("Clerk webhook %s (%s): %s", svix_id, event_type, applied.outcome)
    if applied.ended_sessions or applied.deleted_users:
        try:
            await request.app.state.on_sessions_ended(applied.ended_sessions, applied.deleted_users)
        except Exception:
            # The change is committed: a 5xx would only make Svix redeliver an event that
            # is now a duplicate, so the failure is logged and the delivery acknowledged.
            log.exception("closing the sockets of ended Clerk sessions failed")
    return _answer(applied.outcome, 200, applied.outcome)


async def _apply_once(
    db: Database, svix_id: str, event_type: str, data: Mapping[str, Any]
) -> _Applied:
    try:
        async with db.transaction("clerk_webhook") as uow:
            if await uow.session.get(WebhookDelivery, svix_id) is not None:
                return _Applied("duplicate")
            # Written first: on PostgreSQL a concurrent duplicate then waits on this key
            # and fails, instead of applying the event a second time.
            uow.session.add(WebhookDelivery(svix_id=svix_id, event_type=event_type[:64]))
            await uow.session.flush()
            return await _apply(uow, event_type, data)
    except IntegrityError:
        async with db.reading() as session:
            if await session.get(WebhookDelivery, svix_id) is not None:
                return _Applied("duplicate")
        raise


async def _apply(uow: UnitOfWork, event_type: str, data: Mapping[str, Any]) -> _Applied:
    if event_type in USER_UPSERTS:
        # A late or repeated update changes nothing, and says so.
        changed = await clerk_sync.apply_user_event(uow, data)
        return _Applied("applied" if changed else "ignored")
    if event_type == "user.deleted":
        # A user never seen (only a tombstone is written) or already deleted: nothing applied.
        if await clerk_sync.delete_user(uow, data) is None:
            return _Applied("ignored")
        return _Applied("applied", deleted_users=[str(data["id"])])
    if event_type in SESSION_ENDINGS:
        ended = await clerk_sync.end_clerk_session(uow, data, event_type)
        return _Applied("applied", ended_sessions=[ended.clerk_session_id])
    return _Applied("ignored")


async def _read_body(request: Request) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_event(body: bytes) -> tuple[str, Mapping[str, Any]] | None:
    try:
        event = json.loads(body)
    # A validly signed body can still be nested past the parser's depth.
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict):
        return None
    event_type, data = event.get("type"), event.get("data")
    # The type is stored with the delivery's id, even when unknown.
    if not isinstance(event_type, str) or not event_type or has_unstorable_chars(event_type):
        return None
    return (event_type, data) if isinstance(data, dict) else None


def _answer(outcome: str, status: int, message: str) -> Response:
    WEBHOOKS.labels(outcome).inc()
    key = "status" if status < 400 else "error"
    return JSONResponse({key: message}, status_code=status)
