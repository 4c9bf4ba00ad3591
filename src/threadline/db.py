"""Storage plumbing: the engine, sessions, and named transactions whose events are
published only after commit. SQLite's writes queue on a lock rather than fail as "locked".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext
from typing import Any, TypeVar, cast

import asyncpg
from sqlalchemy import ColumnElement, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, Dialect, Result
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from threadline.errors import ServiceUnavailable
from threadline.metrics import transaction_seconds

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[Any]], Awaitable[None]]

SERVER_SETTINGS = {"application_name": "threadline", "timezone": "UTC"}
# Hot single statements' own asyncpg pool, beside the engine's 20 + 10 connections; idle
# ones stay open (closing costs a timer per use).
DRIVER_POOL_SIZE = 10
# Session.info keys (PostgreSQL, FAST_PATHS on): reads of plain columns, or of entities too
# (read sessions: never written back), may go through the driver (models.queries).
DRIVER_ROWS = "threadline.driver_rows"
DRIVER_ENTITIES = "threadline.driver_entities"
# Session.info key: what to call when a read session gives up on a lost connection.
ON_LOST = "threadline.on_lost"
# A replica a query could not reach is left alone this long: one failed query per process.
REPLICA_REST_SECONDS = 5.0


async def _publish_nothing(events: Sequence[Any]) -> None:
    return None


def _sqlite_pragmas(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # SQLite's lower() folds ASCII only, unlike Python's (services.search) and PostgreSQL's.
    dbapi_connection.create_function("lower", 1, _lower, deterministic=True)


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value  # NULL stays NULL


# Lost connections (failover, pg_terminate_backend, a restart), as asyncpg reports them.
_SERVER_GONE = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, ConnectionDoesNotExistError among them
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)
# asyncpg's InterfaceError for a closed connection, also a pool's closed while held.
_CLOSED_WORDS = ("closed", "released back to the pool")
WRITE_LOST = (
    "The database connection was lost; the change may not have been saved. "
    "Retry (sendMessage with the same clientId is applied once)."
)
READ_LOST = "The database is unavailable; retry shortly."


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the database connection is gone."""
    seen: BaseException | None = exc
    for _ in range(4):  # SQLAlchemy -> its adapter -> asyncpg
        if seen is None:
            return False
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, _SERVER_GONE):
            return True
        if isinstance(seen, asyncpg.InterfaceError) and any(
            words in str(seen) for words in _CLOSED_WORDS
        ):
            return True
        if isinstance(seen, OSError) and not isinstance(seen, TimeoutError):
            return True
        seen = seen.orig if isinstance(seen, DBAPIError) else seen.__cause__
    return False


def _replace_closed(dbapi_connection: Any, *_: Any) -> None:
    """At checkout, a pooled connection the server has closed is replaced (SQLAlchemy
    retries with a fresh one). asyncpg knows without a round trip, unlike pool_pre_ping."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


# Behind PgBouncer in transaction mode no prepared statement may outlive its transaction:
# with both caches off asyncpg prepares each unnamed and binds it before its Sync.
POOLED_CONNECT_ARGS = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
# An execution option of our own on the engine: Database's driver pool follows it.
POOLED = "threadline.pooled"


def make_engine(database_url: str, *, pooled: bool = False) -> AsyncEngine:
    """The app's engine; ``pooled``: DATABASE_URL is a transaction-mode pooler (PgBouncer)."""
    if database_url.startswith("sqlite"):
        engine = create_async_engine(database_url, pool_size=8, max_overflow=8)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(
        database_url,
        # Connections past pool_size close when returned: reconnecting (TLS, auth) costs.
        pool_size=20,
        max_overflow=10,
        # No pre-ping (see _replace_closed); recycled before servers time them out.
        pool_recycle=1800,
        connect_args={
            "server_settings": SERVER_SETTINGS,
            **(POOLED_CONNECT_ARGS if pooled else {}),
        },
    )
    engine.sync_engine.update_execution_options(**{POOLED: pooled})
    event.listen(engine.sync_engine.pool, "checkout", _replace_closed)
    return engine


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    """No state outlives these connections' statements: asyncpg's default reset would be a
    round trip per release (an open transaction is still rolled back before this runs)."""


class ReadSession(AsyncSession):
    """A session that only reads: a statement that meets a lost connection runs once more
    on a fresh one (safe: on PostgreSQL read sessions autocommit), then fails with
    SERVICE_UNAVAILABLE."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:  # also serves scalars()
        return await self._again_if_lost(super().execute, *args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return await self._again_if_lost(super().scalar, *args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await self._again_if_lost(super().get, *args, **kwargs)

    async def _again_if_lost(
        self, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        for attempt in range(2):
            try:
                return await call(*args, **kwargs)
            except Exception as exc:
                if not connection_lost(exc):
                    raise
                # Gives the dead connection up; the next statement checks out another.
                await self.invalidate()
                if attempt:
                    if (lost := self.info.get(ON_LOST)) is not None:
                        lost()
                    raise ServiceUnavailable(READ_LOST) from exc
        raise AssertionError("unreachable")


class SharedReadSession(ReadSession):
    """A read session that concurrent tasks of one operation (sibling fields, DataLoader
    batches) may share: an AsyncSession fails, rather than waits, on a second statement."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn = asyncio.Lock()

    async def _again_if_lost(
        self, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        async with self._turn:
            return await super()._again_if_lost(call, *args, **kwargs)


async def driver_fetch(session: AsyncSession, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One PostgreSQL statement on the session's own asyncpg connection (and transaction):
    for a page's batch reads, where SQLAlchemy's per-statement work costs more than the driver's."""
    if isinstance(session, SharedReadSession):
        return await session._again_if_lost(_driver_fetch, session, sql, args)  # type: ignore[no-any-return]
    return await _driver_fetch(session, sql, args)


async def _driver_fetch(session: AsyncSession, sql: str, args: Sequence[Any]) -> list[Any]:
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None, "a checked-out connection has the driver's under it"
    records: list[Any] = await driver.fetch(sql, *args)
    return records


def dialect_of(session: AsyncSession) -> Dialect:
    bind = session.bind
    assert bind is not None, "sessions here are always bound to the engine"
    return bind.dialect


def dialect_insert(session: AsyncSession, table: type[Any]) -> postgresql.Insert:
    """An INSERT of the session's database's dialect: with ``on_conflict_do_nothing``."""
    module = postgresql if is_postgres(session) else sqlite
    statement: postgresql.Insert = module.insert(table)
    return statement


def is_postgres(session: AsyncSession) -> bool:
    return dialect_of(session).name == "postgresql"


async def count_rows(session: AsyncSession, table: type[Any], *where: ColumnElement[bool]) -> int:
    return int(await session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched (AsyncSession.execute is typed as a plain Result)."""
    return int(cast("CursorResult[Any]", result).rowcount)


@contextmanager
def _timed_write(name: str) -> Iterator[None]:
    """Times a named write; a lost connection is SERVICE_UNAVAILABLE, never retried here:
    a write whose connection died may have committed."""
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:
        if connection_lost(exc):
            raise ServiceUnavailable(WRITE_LOST) from exc
        raise
    finally:
        transaction_seconds(name).observe(time.perf_counter() - started)


class UnitOfWork:
    """One named transaction and the events it will publish once committed."""

    def __init__(self, name: str, session: AsyncSession) -> None:
        self.name = name
        self.session = session
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        """Queue an event; it is published after commit, or dropped on rollback."""
        self.events.append(event)


async def try_transaction_lock(uow: UnitOfWork, key: int) -> bool:
    """Whether this transaction won the deployment-wide lock ``key`` (held until it ends:
    that works behind PgBouncer). SQLite's writes are serialised anyway."""
    if not is_postgres(uow.session):
        return True
    won = await uow.session.scalar(select(func.pg_try_advisory_xact_lock(key)))
    return bool(won)


_Session = TypeVar("_Session", bound=AsyncSession)


def _sessionmaker(
    bind: AsyncEngine, class_: type[_Session], info: dict[str, Any]
) -> async_sessionmaker[_Session]:
    return async_sessionmaker(
        bind, class_=class_, expire_on_commit=False, autoflush=False, info=info
    )


class Database:
    def __init__(
        self,
        engine: AsyncEngine,
        publish: Publish = _publish_nothing,
        *,
        fast_paths: bool = True,
        replica: AsyncEngine | None = None,
    ) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        # The driver's fast paths: reads (models.queries) and the group-commit send.
        self.fast_paths = fast_paths and self.is_postgres
        self.pooled = bool(engine.sync_engine.get_execution_options().get(POOLED))
        reads: dict[str, Any] = {DRIVER_ROWS: self.fast_paths, DRIVER_ENTITIES: self.fast_paths}
        # Under READ COMMITTED each statement has its own snapshot: autocommit saves BEGIN.
        read_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.is_postgres else engine
        )
        self.sessions = _sessionmaker(engine, AsyncSession, {DRIVER_ROWS: self.fast_paths})
        self.read_sessions = _sessionmaker(read_engine, ReadSession, reads)
        self.shared_sessions = _sessionmaker(read_engine, SharedReadSession, reads)
        # A hot standby: for content reads, never for writes or access decisions
        # (schema.context). Driver reads use the session's connection: no asyncpg pool.
        self.replica = replica
        self.replica_sessions = (
            _sessionmaker(
                replica.execution_options(isolation_level="AUTOCOMMIT"),
                SharedReadSession,
                {**reads, ON_LOST: self._replica_lost},
            )
            if replica is not None
            else None
        )
        self._replica_rests_until = 0.0
        self.publish = publish
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._driver_pool: asyncpg.Pool | None = None
        self._driver_pool_opening = asyncio.Lock()

    @property
    def replica_usable(self) -> bool:
        return self.replica_sessions is not None and time.monotonic() >= self._replica_rests_until

    def _replica_lost(self) -> None:
        if time.monotonic() >= self._replica_rests_until:
            log.warning(
                "the read replica is unreachable: queries read the primary for %.0f s",
                REPLICA_REST_SECONDS,
            )
        self._replica_rests_until = time.monotonic() + REPLICA_REST_SECONDS

    @asynccontextmanager
    async def transaction(self, name: str) -> AsyncIterator[UnitOfWork]:
        """Run one unit of work; commit on success, then publish what it emitted."""
        with _timed_write(name):
            async with (
                self._write_lock or nullcontext(),
                self.sessions() as session,
                session.begin(),
            ):
                uow = UnitOfWork(name, session)
                yield uow
        if uow.events:
            await self.publish_committed(name, uow.events)

    async def publish_committed(self, name: str, events: Sequence[Any]) -> None:
        """Publish what a committed write emitted; a failure is logged, never raised."""
        try:
            await self.publish(events)
        except Exception as exc:
            # The events are in the log already; subscribers fill the gap from it.
            log.warning("publishing events of %s failed: %s", name, exc)

    @asynccontextmanager
    async def driver_connection(self, name: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled asyncpg connection for one self-contained PostgreSQL statement: a hot
        write without the ORM's work, or a SQLAlchemy checkout's, which costs more."""
        if not self.is_postgres:
            raise RuntimeError("driver_connection is for PostgreSQL only")
        with _timed_write(name):
            pool = self._driver_pool or await self._open_driver_pool()
            # asyncpg replaces a connection the server closed when it is acquired.
            async with pool.acquire() as conn:
                yield conn

    async def _open_driver_pool(self) -> asyncpg.Pool:
        async with self._driver_pool_opening:
            if self._driver_pool is None:
                url = self.engine.url.set(drivername="postgresql")
                self._driver_pool = await asyncpg.create_pool(
                    url.render_as_string(hide_password=False),
                    min_size=0,
                    max_size=DRIVER_POOL_SIZE,
                    max_inactive_connection_lifetime=0,
                    server_settings=SERVER_SETTINGS,
                    reset=_nothing_to_reset,
                    # Off behind a pooler, as on the engine's connections; else asyncpg's default.
                    statement_cache_size=0 if self.pooled else 100,
                )
            return self._driver_pool

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for queries; it never commits."""
        session = self.read_sessions()
        try:
            yield session
        finally:
            # Even when cancelled: a cancelled reset is a logged traceback and a lost connection.
            await asyncio.shield(session.close())

    async def schema_revision(self) -> str | None:
        """The database's Alembic revision (None: never migrated); a round trip."""
        from alembic.runtime.migration import MigrationContext

        async with self.engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )

    async def dispose(self) -> None:
        pool, self._driver_pool = self._driver_pool, None
        if pool is not None:
            await pool.close()
        if self.replica is not None:
            await self.replica.dispose()
        await self.engine.dispose()
