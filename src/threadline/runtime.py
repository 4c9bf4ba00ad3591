"""The process's long-lived parts, built once from Settings; the GraphQL context
carries this one object, and each resolver takes from it what it needs."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Sequence
from functools import partial

from threadline.auth.tokens import LEEWAY_SECONDS, TokenVerifier
from threadline.config import Settings
from threadline.db import Database, make_engine
from threadline.errors import SignedOut
from threadline.models import Attachment, User
from threadline.realtime.broker import Broker
from threadline.realtime.caches import TTLCache
from threadline.realtime.channels import publish_all
from threadline.realtime.deliveries import DeliveryTracker
from threadline.realtime.fanout import Fanout
from threadline.realtime.presence import PresenceTracker
from threadline.realtime.rate_limits import RateLimiter, windows_as_limits
from threadline.realtime.recent_writers import RecentWriters
from threadline.realtime.redis_pool import settings_target
from threadline.realtime.thread_feed import ThreadFeed
from threadline.realtime.typing import TypingTracker
from threadline.services import attachments, clerk_sync, users
from threadline.services.clerk_sync import Identity
from threadline.uploads.signing import UrlSigner
from threadline.uploads.storage import LocalStorage, Storage

log = logging.getLogger(__name__)

# A signed-in user is looked up at most this often per token session, per process.
VIEWER_CACHE_SECONDS = 5.0
# A verified token is trusted again without a signature check for this long (not past expiry).
VERIFIED_TOKEN_SECONDS = 30.0
# Users rendered into events are shared across subscribers for this long.
USER_CACHE_SECONDS = 2.0


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        redis = settings_target(settings)
        self.broker = Broker(redis)
        self.db = Database(
            make_engine(settings.database_url, pooled=settings.pooled),
            publish=partial(publish_all, self.broker),
            fast_paths=settings.fast_paths,
            replica=(
                make_engine(settings.database_read_url, pooled=settings.pooled)
                if settings.database_read_url
                else None
            ),
        )
        # Whose reads stay on the primary after a write (without a replica, nobody asks).
        self.recent_writers = RecentWriters(
            redis if settings.database_read_url else None,
            settings.read_after_write_seconds if settings.database_read_url else 0.0,
        )
        self.verifier = TokenVerifier(settings)
        self.rate_limiter = RateLimiter(
            redis,
            enabled=settings.rate_limits,
            limits=windows_as_limits(settings.rate_limit_windows()),
        )
        self.presence = PresenceTracker(redis, self.broker)
        self.typing = TypingTracker(redis, self.broker, self.db)
        self.user_cache: TTLCache[uuid.UUID, User] = TTLCache(USER_CACHE_SECONDS, 50_000)
        self.deliveries = DeliveryTracker(self.db)
        # Live delivery: each thread's events in order, and their fan-out to local sockets.
        self.feed = ThreadFeed(self.broker, self.db)
        self.fanout = Fanout(self.feed, self.deliveries, self.broker.queue_limit)
        self._verified: TTLCache[str, Identity] = TTLCache(VERIFIED_TOKEN_SECONDS, 20_000)
        self._viewers: TTLCache[tuple[str, str | None], User] = TTLCache(
            VIEWER_CACHE_SECONDS, 10_000
        )
        # How many times forget_viewers ran: a viewer read before a change differs.
        self.viewers_forgotten = 0
        self.storage: Storage = LocalStorage(settings.upload_dir)
        self.preview_repairs = attachments.PreviewRepairs(self.db, self.storage)
        self.url_signer = UrlSigner(
            settings.resolve_signing_secret(), settings.attachment_url_seconds
        )

    async def start(self) -> None:
        await self.broker.connect()
        self.deliveries.start()

    async def stop(self) -> None:
        await self.deliveries.stop()
        await self.typing.aclose()
        await self.presence.aclose()
        await self.rate_limiter.aclose()
        await self.recent_writers.aclose()
        await self.verifier.aclose()
        await self.broker.disconnect()
        await self.db.dispose()

    # -- identity

    async def authenticate(self, token: str) -> tuple[Identity, User]:
        """The verified identity behind a bearer token and its local user."""
        identity = self._verified.get(token)
        if identity is None or identity.expires_at.timestamp() + LEEWAY_SECONDS < time.time():
            identity = await self.verifier.verify(token)
            # The same token always verifies to the same claims: check it once (pure CPU).
            self._verified.put(token, identity)
        key = (identity.clerk_id, identity.session_id)
        cached = self._viewers.get(key)
        if cached is not None:
            return identity, cached
        forgotten = self.viewers_forgotten
        user = await self._load_viewer(identity)
        if forgotten != self.viewers_forgotten:
            # Forgotten while it loaded (a role changed): what was read may predate it.
            return identity, await self._load_viewer(identity)
        self._viewers.put(key, user)
        return identity, user

    async def _load_viewer(self, identity: Identity) -> User:
        async with self.db.reading() as session:
            if identity.session_id and await clerk_sync.is_session_ended(
                session, identity.session_id
            ):
                raise SignedOut("This session has ended: sign in again")
            user = await users.user_by_clerk_id(session, identity.clerk_id)
        if user is not None and user.deleted_at is not None:
            raise SignedOut("This user was deleted")
        if user is None or _wants_profile(user, identity):
            async with self.db.transaction("user_for_identity") as uow:
                user = await clerk_sync.user_for_identity(uow, identity)
        return user

    def forget_viewers(
        self,
        clerk_user_ids: Sequence[str] = (),
        sessions: Sequence[str] = (),
        user_ids: Collection[uuid.UUID] = (),
    ) -> None:
        self.viewers_forgotten += 1
        self._viewers.discard(
            lambda key, user: key[0] in clerk_user_ids or key[1] in sessions or user.id in user_ids
        )
        if clerk_user_ids or user_ids:
            gone = set(clerk_user_ids)
            self.user_cache.discard(lambda uid, user: user.clerk_id in gone or uid in user_ids)

    # -- attachments

    def attachment_url(
        self,
        row: Attachment,
        request_origin: str | None,
        viewer: uuid.UUID,
        *,
        preview: bool = False,
    ) -> str:
        """The viewer's signed download URL (of the file or its preview), on PUBLIC_URL
        or else the request's own origin."""
        origin = self.settings.public_url or request_origin or ""
        return self.url_signer.url(row.id, row.filename, origin, viewer, preview=preview)


def _wants_profile(user: User, identity: Identity) -> bool:
    """A placeholder profile that the token's claims can fill in."""
    return user.clerk_updated_at is None and (
        (identity.name is not None and user.display_name == clerk_sync.PLACEHOLDER_NAME)
        or (identity.username is not None and user.username is None)
    )
