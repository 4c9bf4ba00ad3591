"""The per-operation context: who is calling, with which services and loaders.

The viewer is resolved lazily, once: queries that need no identity cost no token check.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from threadline.errors import Unauthenticated
from threadline.metrics import QUERY_READS
from threadline.schema.loaders import Loaders

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from threadline.models import User
    from threadline.runtime import Runtime
    from threadline.services.clerk_sync import Identity
    from threadline.services.permissions import ThreadAccess


@dataclass(slots=True)
class ConnectionState:
    connection_id: str
    session_id: uuid.UUID | None = None
    subscriptions: int = 0
    tasks: list[Any] = field(default_factory=list)


# Slots: a live WebSocket keeps one per connection, and strawberry sets only declared fields.
@dataclass(eq=False, slots=True)
class Context:
    runtime: Runtime
    # The raw bearer token, or None; verified on first use.
    token: str | None = None
    user_agent: str | None = None
    # scheme://host the request came to: where absolute URLs point without PUBLIC_URL.
    origin: str | None = None
    # The WebSocket of a subscription connection, and its connection_init payload.
    connection: Any = None
    connection_params: Any = None
    # Per-connection state shared by every operation of one WebSocket.
    state: ConnectionState | None = None
    _viewer: User | None = None
    _identity: Identity | None = None
    _session: AsyncSession | None = None
    _loaders: Loaders | None = None
    # Thread accesses checked in this operation (by @threadRole or the thread
    # loader), by thread id; forgotten after a write and between subscription events.
    access: dict[uuid.UUID, ThreadAccess] = field(default_factory=dict)
    # Set on the viewer-less context that renders a broadcast threadEvents frame:
    # the one thread its subscribers were checked for (see loaders.thread).
    broadcast_thread: uuid.UUID | None = None
    # Set by the operation runner on a query: its content reads may go to the replica.
    replica_ok: bool = False
    _on_replica: bool | None = None
    # Set by a stream for the value it yields: run once its frame is read, before it is sent.
    after_render: Callable[[], Awaitable[None]] | None = None
    # Whether it opened a database session: a frame that did not shows its event alone.
    read_database: bool = False
    # Wrote for the viewer: their reads stay on the primary a while (marked in close).
    _wrote: bool = False
    _retired: list[AsyncSession] = field(default_factory=list)
    # Writes that wait until this operation's read connection is back in the pool.
    _deferred: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def viewer(self) -> User:
        """The signed-in user; UNAUTHENTICATED when the token is missing or bad."""
        if self._viewer is None:
            if not self.token:
                raise Unauthenticated("Sign in: send `Authorization: Bearer <token>`")
            self._identity, self._viewer = await self.runtime.authenticate(self.token)
        return self._viewer

    def set_viewer(self, identity: Identity, user: User) -> None:
        self._identity, self._viewer = identity, user

    @property
    def viewer_or_none(self) -> User | None:
        return self._viewer

    @property
    def identity(self) -> Identity | None:
        return self._identity

    async def session(self) -> AsyncSession:
        """The operation's read session, opened on first use and closed at the end; on the
        replica when ``on_replica`` (content only: access is decided by ``checks``)."""
        if self._session is None:
            replica = await self.on_replica()
            if self._session is None:  # a sibling field may have opened it meanwhile
                db = self.runtime.db
                sessions = db.replica_sessions if replica else None
                self._session = (sessions or db.shared_sessions)()
                self.read_database = True
        return self._session

    async def on_replica(self) -> bool:
        """Whether this operation's content comes from the read replica, decided once:
        a query, a replica configured, and a viewer who has not written lately (or none)."""
        if self._on_replica is None:
            replica = self.replica_ok and self.runtime.db.replica_usable
            if replica and self.token:
                try:
                    viewer = await self.viewer()
                except Unauthenticated:
                    replica = False  # the fields that need a viewer will say so
                else:
                    replica = not await self.runtime.recent_writers.recent(viewer.id)
            if self._on_replica is None:
                self._on_replica = replica
                if self.replica_ok and self.runtime.db.replica is not None:
                    QUERY_READS.labels("replica" if replica else "primary").inc()
        return self._on_replica

    @asynccontextmanager
    async def checks(self) -> AsyncIterator[AsyncSession]:
        """A session for access decisions: always on the primary, where removals are written.

        On the replica, a short-lived primary session: an operation never holds a primary
        connection while it waits for a replica one, so the two pools cannot deadlock.
        """
        if not await self.on_replica():
            yield await self.session()
            return
        session = self.runtime.db.shared_sessions()
        try:
            yield session
        finally:
            await asyncio.shield(session.close())

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders(self)
        return self._loaders

    async def before_write(self) -> None:
        """Give the read session's connection back before a write takes another: holding
        one while waiting for a second deadlocks once requests have taken the whole pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def after_close(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` (a write) once this operation has closed its read session, before
        the response is sent: a query's sibling fields may still use its connection."""
        self._deferred.append(work)

    def after_write(self) -> None:
        """Forget what was read before a mutation: loaders, accesses and the session, so
        that later reads see what it committed (rows read earlier stay usable)."""
        self._loaders = None
        self.access.clear()
        self._wrote = True
        self._on_replica = False
        if self._session is not None:
            self._retired.append(self._session)
            self._session = None

    async def renew(self) -> None:
        """Between two events of a subscription: fresh loaders, no session held open,
        and access checked afresh (the viewer may have been removed meanwhile)."""
        await self.close()
        self.access.clear()

    async def close(self) -> None:
        if self._loaders is not None:
            self._loaders.drop()
            self._loaders = None
        for session in [*self._retired, self._session]:
            if session is not None:
                # Finished even if the operation is being cancelled (see Database.reading).
                await asyncio.shield(session.close())
        self._session = None
        self._retired.clear()
        if self._wrote and self._viewer is not None:
            self._wrote = False
            await self.runtime.recent_writers.wrote(self._viewer.id)
        deferred, self._deferred = self._deferred, []
        for work in deferred:
            try:
                await work()
            except Exception:
                log.exception("a write deferred to the end of an operation failed")

    def fork(self) -> Context:
        """A context for one operation: shared identity, its own session and loaders
        (strawberry hands every operation of a WebSocket the same context)."""
        return Context(
            runtime=self.runtime,
            token=self.token,
            user_agent=self.user_agent,
            origin=self.origin,
            connection=self.connection,
            state=self.state,
            _viewer=self._viewer,
            _identity=self._identity,
        )
