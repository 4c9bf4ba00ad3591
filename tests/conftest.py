"""Test harness: a real server per test, on PostgreSQL + Redis or SQLite + in-memory.

``THREADLINE_TEST_BACKEND`` picks the backend (``postgres``, ``sqlite``, default sqlite;
``cluster``: PostgreSQL and a Redis Cluster with sharded pub/sub; ``pgbouncer``:
``postgres`` with the app behind PgBouncer in transaction mode, which
``scripts/pgbouncer start`` runs on 127.0.0.1:6432). The schema is migrated once per
session; each test starts from empty tables (PostgreSQL: DELETE; SQLite: a fresh copy
of the migrated file) and a flushed Redis database (on the cluster: keys and channels
under a prefix of its own). Clients are real: httpx over TCP and WebSocket clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from threadline.app import create_app
from threadline.auth.tokens import mint_dev_token
from threadline.cli import WEBSOCKET_IMPLEMENTATION, WS_PING_SECONDS
from threadline.config import Settings
from threadline.migrate import upgrade_to_head
from threadline.models import Base
from threadline.uvicorn_seam import protocol_class

RUN_BACKEND = os.environ.get("THREADLINE_TEST_BACKEND", "sqlite")
# Behind PgBouncer everything holds that holds on PostgreSQL + Redis (BACKEND says
# "postgres"): databases are made and emptied on PostgreSQL directly, and the app (and
# every command a test runs) gets PgBouncer's address, DATABASE_POOLER and the direct URL.
POOLED = RUN_BACKEND == "pgbouncer"
BACKEND = "postgres" if POOLED else RUN_BACKEND
# The cluster row is the PostgreSQL row with a Redis Cluster (scripts/redis-cluster) for Redis.
CLUSTER = BACKEND == "cluster"
ON_POSTGRES = BACKEND in {"postgres", "cluster"}
REDIS_CLUSTER_URL = os.environ.get("THREADLINE_TEST_REDIS_CLUSTER", "redis://127.0.0.1:7101/0")
PG_BASE = "postgresql+asyncpg://postgres@127.0.0.1:5432"
PGBOUNCER_BASE = "postgresql+asyncpg://postgres@127.0.0.1:6432"
REDIS_BASE = "redis://127.0.0.1:6379"
DEV_SECRET = "test-dev-secret-" + "x" * 32
SIGNING_SECRET = "test-signing-secret-" + "y" * 32
SESSION_DB = f"tl_test_{os.getpid()}"


def database_settings(direct_url: str) -> dict[str, Any]:
    """The database part of Settings for a test database: behind PgBouncer in a pooled run."""
    if not POOLED or not direct_url.startswith(PG_BASE):
        return {"database_url": direct_url}
    return {
        "database_url": direct_url.replace(PG_BASE, PGBOUNCER_BASE, 1),
        "database_pooler": "pgbouncer",
        "database_direct_url": direct_url,
    }


def database_environment(database_url: str) -> dict[str, str]:
    """The DATABASE_* variables of a process on ``database_url``: PgBouncer's address
    brings the pooler setting and PostgreSQL's own address with it."""
    if not database_url.startswith(PGBOUNCER_BASE):
        return {"DATABASE_URL": database_url}
    return {
        "DATABASE_URL": database_url,
        "DATABASE_POOLER": "pgbouncer",
        "DATABASE_DIRECT_URL": database_url.replace(PGBOUNCER_BASE, PG_BASE, 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pg_admin(sql: str) -> None:
    engine = create_async_engine(f"{PG_BASE}/postgres", isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def own_database(tmp_path: Path, label: str, *, folder: bool = True) -> AsyncIterator[str]:
    """The URL of an empty database of the test's own, never migrated: on PostgreSQL
    created here and dropped after; on SQLite a file under ``tmp_path/label``, whose
    folder exists unless ``folder`` is False (for tests of who makes it)."""
    if BACKEND == "postgres":
        name = f"tl_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        await _pg_admin(f"CREATE DATABASE {name}")
        try:
            yield f"{PG_BASE}/{name}"
        finally:
            await _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    else:
        if folder:
            (tmp_path / label).mkdir()
        yield f"sqlite+aiosqlite:///{tmp_path / label / f'{label}.db'}"


async def _no_sequences(url: str) -> None:
    """Tests empty the tables with DELETE, which restarts no sequence: there must be none."""
    conn = await asyncpg.connect(url.replace("+asyncpg", "", 1))
    try:
        names = await conn.fetch("SELECT sequence_name FROM information_schema.sequences")
    finally:
        await conn.close()
    if names:
        raise RuntimeError(f"tests/conftest.py empties tables with DELETE; restart {names} too")


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The migrated template: a PostgreSQL database, or a SQLite file to copy."""
    if ON_POSTGRES:
        asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {SESSION_DB} WITH (FORCE)"))
        asyncio.run(_pg_admin(f"CREATE DATABASE {SESSION_DB}"))
        url = f"{PG_BASE}/{SESSION_DB}"
        upgrade_to_head(url)
        asyncio.run(_no_sequences(url))
        yield url
        asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {SESSION_DB} WITH (FORCE)"))
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        upgrade_to_head(f"sqlite+aiosqlite:///{path}")
        yield str(path)


# Children first, so that no foreign key has a row to cascade to. DELETE, not TRUNCATE:
# TRUNCATE gives every table and index a new file, 100-300 ms a test on the 2-core
# machine; these DELETEs of a test's few rows take about 15 ms. The tables have no
# sequences to restart (``migrated`` checks).
EMPTY_TABLES = "; ".join(f"DELETE FROM {t.name}" for t in reversed(Base.metadata.sorted_tables))


async def _empty_tables(url: str) -> None:
    # asyncpg's simple query: all the statements in one round trip and one transaction.
    conn = await asyncpg.connect(url.replace("+asyncpg", "", 1))
    try:
        await conn.execute(EMPTY_TABLES)
    finally:
        await conn.close()


@pytest.fixture
async def database_url(migrated: str, tmp_path: Path) -> str:
    if ON_POSTGRES:
        await _empty_tables(migrated)
        return migrated
    target = tmp_path / "threadline.db"
    shutil.copy(migrated, target)
    return f"sqlite+aiosqlite:///{target}"


# Redis databases 1..15 are handed out to pytest processes (xdist workers, or test
# runs of several checkouts on one machine) with a lock file each, so that no run
# flushes another's keys. Pub/sub ignores database numbers: the Redis backend names
# the channels of database N "dbN:...", so no run hears another's (fixed names such
# as the ended-sessions channel included).
REDIS_DATABASES = range(1, 16)


@pytest.fixture(scope="session")
def redis_database() -> Iterator[int]:
    folder = Path(os.environ.get("TMPDIR", "/tmp"))
    for number in REDIS_DATABASES:
        handle = (folder / f"threadline-test-redis-{number}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield number
        finally:
            handle.close()
        return
    raise RuntimeError(f"all Redis test databases {REDIS_DATABASES} are taken by other runs")


@pytest.fixture
def redis_prefix() -> str:
    """The key and channel prefix of this test's deployment on a shared Redis Cluster
    (database 0 only): no test hears or sees another's."""
    return f"t{uuid.uuid4().hex[:12]}:" if CLUSTER else ""


async def delete_cluster_keys(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` on each master of the cluster."""
    from redis.asyncio.cluster import RedisCluster

    client: Any = RedisCluster.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", target_nodes=RedisCluster.PRIMARIES):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_url(redis_database: int, redis_prefix: str) -> AsyncIterator[str | None]:
    if CLUSTER:
        yield REDIS_CLUSTER_URL
        await delete_cluster_keys(REDIS_CLUSTER_URL, redis_prefix)
        return
    if BACKEND != "postgres":
        yield None
        return
    import redis.asyncio as aioredis

    url = f"{REDIS_BASE}/{redis_database}"
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    yield url
    await client.flushdb()
    await client.aclose()


@pytest.fixture
def settings(
    database_url: str, redis_url: str | None, redis_prefix: str, tmp_path: Path
) -> Settings:
    return Settings(
        **database_settings(database_url),
        redis_url=redis_url,
        redis_cluster=CLUSTER,
        redis_prefix=redis_prefix,
        dev_auth_secret=DEV_SECRET,  # type: ignore[arg-type]
        attachment_signing_secret=SIGNING_SECRET,  # type: ignore[arg-type]
        upload_dir=tmp_path / "uploads",
        clerk_webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # type: ignore[arg-type]
        # Tests send faster than people; test_rate_limits_http turns the limits on.
        rate_limits=False,
        _env_file=None,  # type: ignore[call-arg]
    )


class PromptServer(uvicorn.Server):
    """uvicorn's Server without two fixed waits that cost a test run minutes.

    uvicorn looks at ``should_exit`` every 0.1 s, and its shutdown waits 0.1 s after
    asking the open connections to close. A run starts and stops about 1,700 servers,
    so the two came to over a minute of the test command. A server that still has
    connections or tasks at the stop gets uvicorn's own shutdown unchanged; the app's
    lifespan shutdown runs either way.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.exit_requested = asyncio.Event()
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exit_requested.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.server_state.connections or self.server_state.tasks:
            await super().shutdown(sockets)
            return
        for listener in self.servers:
            listener.close()
        for listener in self.servers:
            await listener.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


@dataclass
class Server:
    base: str
    app: Any
    server: PromptServer
    task: asyncio.Task[None]

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/graphql"

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime


async def start_server(settings: Settings, **uvicorn_options: Any) -> Server:
    app = create_app(settings)
    port = free_port()
    options: dict[str, Any] = {"ws_ping_interval": WS_PING_SECONDS}
    options |= {"ws_ping_timeout": WS_PING_SECONDS, **uvicorn_options}
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws=WEBSOCKET_IMPLEMENTATION,
        http=protocol_class(settings.http_header_timeout_seconds),
        ws_max_size=settings.max_request_bytes,
        ws_per_message_deflate=False,
        lifespan="on",
        # No logging config of uvicorn's own: its records reach the root logger, where
        # pytest and the traceback check below see them.
        log_config=None,
        **options,
    )
    server = PromptServer(config)
    task = asyncio.create_task(server.serve())
    # Woken by the start itself: polling for it cost half a poll interval a test.
    listening = asyncio.create_task(server.listening.wait())
    await asyncio.wait({task, listening}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if not server.started:
        listening.cancel()
        if task.done():
            task.result()
        raise RuntimeError("test server did not start")
    return Server(f"http://127.0.0.1:{port}", app, server, task)


async def stop_server(server: Server) -> None:
    server.server.should_exit = True
    server.server.exit_requested.set()
    # asyncio.wait, not wait_for: a timeout must leave the task running for force_exit,
    # which stops uvicorn waiting for connections (wait_for would cancel it mid-shutdown).
    stopped, _ = await asyncio.wait({server.task}, timeout=10)
    if not stopped:
        server.server.force_exit = True
    await asyncio.wait_for(server.task, 5)  # also raises what the server raised


class GraphQLError(AssertionError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors

    @property
    def code(self) -> str | None:
        return self.errors[0].get("extensions", {}).get("code")


def token_for(username: str) -> str:
    return mint_dev_token(DEV_SECRET, f"dev_{username}", username)


@dataclass
class Api:
    """A signed-in (or anonymous) GraphQL client over real HTTP."""

    http: httpx.AsyncClient
    token: str | None = None
    username: str | None = None
    id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    async def raw(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        body: dict[str, Any] = response.json()
        return body

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await self.raw(query, variables)
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        data: dict[str, Any] = body["data"]
        return data

    async def error(self, query: str, variables: dict[str, Any] | None = None) -> str | None:
        """The first error's code; fails when the operation succeeded."""
        body = await self.raw(query, variables)
        assert body.get("errors"), f"expected an error, got {body}"
        code: str | None = body["errors"][0].get("extensions", {}).get("code")
        return code


class Clients:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.anonymous = Api(http)

    async def user(self, username: str) -> Api:
        api = Api(self.http, token_for(username), username)
        api.id = (await api.gql("{ me { id } }"))["me"]["id"]
        return api

    async def users(self, *usernames: str) -> list[Api]:
        return [await self.user(name) for name in usernames]


# httpx loads the CA bundle into a new SSL context for every client unless given one:
# 25-45 ms a test, for servers that speak plain HTTP.
TLS = httpx.create_ssl_context()


def serving(loop_scope: str = "function") -> tuple[Any, Any, Any]:
    """The ``server``, ``http`` and ``clients`` fixtures, one server per test, run in the
    event loop of ``loop_scope``: a module whose tests run in the module's loop (the
    browser tests, which share one Chromium) takes copies for that loop."""

    @pytest_asyncio.fixture(name="server", loop_scope=loop_scope)
    async def server(settings: Settings) -> AsyncIterator[Server]:
        running = await start_server(settings)
        yield running
        await stop_server(running)

    @pytest_asyncio.fixture(name="http", loop_scope=loop_scope)
    async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=server.base, timeout=30, verify=TLS) as client:
            yield client

    @pytest_asyncio.fixture(name="clients", loop_scope=loop_scope)
    async def clients(http: httpx.AsyncClient) -> Clients:
        return Clients(http)

    return server, http, clients


server, http, clients = serving()


class ServerErrors(logging.Handler):
    """Every record the server logs at ERROR or with a traceback while a test runs.

    The server runs in the test's process; uvicorn's own loggers do not propagate
    to the root logger, so the handler sits on both.
    """

    LOGGERS = ("", "uvicorn")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    def text(self) -> str:
        return "\n".join(self.format(r) for r in self.records)

    def tracebacks(self) -> list[logging.LogRecord]:
        return [
            r
            for r in self.records
            if r.levelno >= logging.WARNING and r.exc_info and r.exc_info[1] is not None
        ]


@pytest.fixture(autouse=True)
def server_errors(request: pytest.FixtureRequest) -> Iterator[ServerErrors]:
    """What the server logged; a test whose server logged a traceback fails, unless it
    is marked ``expect_server_errors`` (it provokes one on purpose)."""
    handler = ServerErrors()
    for name in ServerErrors.LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        for name in ServerErrors.LOGGERS:
            logging.getLogger(name).removeHandler(handler)
    tracebacks = handler.tracebacks()
    if tracebacks and request.node.get_closest_marker("expect_server_errors") is None:
        summary = "; ".join(
            f"{r.name}: {r.getMessage()} ({type(r.exc_info[1]).__name__})"
            for r in tracebacks
            if r.exc_info
        )
        pytest.fail(f"the server logged traceback(s): {summary}")


def unique(prefix: str = "x") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def redis_environment(settings: Settings) -> dict[str, str]:
    """The Redis variables of a `threadline serve` child process for these settings."""
    return {
        "REDIS_URL": settings.redis_url or "",
        "REDIS_CLUSTER": "on" if settings.redis_cluster else "off",
        "REDIS_PREFIX": settings.redis_prefix,
    }
