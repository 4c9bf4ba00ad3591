"""The Alembic environment: runs the packaged revisions on an async engine.

The database URL is the ``sqlalchemy.url`` main option when the caller set one
(``threadline.migrate.upgrade_to_head`` always does), else ``DATABASE_DIRECT_URL`` or
``DATABASE_URL`` through ``Settings``. Autogenerate compares against the models.

Full-text search lives in the database but not in the models, so comparison skips it
(``threadline.migrate.include_name`` / ``include_object``): on PostgreSQL the generated
``tsvector`` column ``messages.search_vector`` and its GIN index (derived, never written
by the application, and a PostgreSQL-only type the SQLite schema must not get); on
SQLite the FTS5 table ``messages_fts``, its shadow tables and its triggers (SQLAlchemy
cannot declare a virtual table, and its reflection looks like tables to drop).
A revision that rebuilds ``messages`` on SQLite (batch mode copies the table) drops its
triggers and renumbers rowids: it must recreate the triggers and run
``INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')``.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from threadline.config import Settings
from threadline.migrate import include_name, include_object
from threadline.models import Base

config = context.config

# Only the alembic command line has an ini file; programmatic callers keep their logging.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# The PostgreSQL advisory lock that serialises migrations of one database.
MIGRATION_LOCK_KEY = 0x7468_7264_6C6E  # "thrdln"


def configure(sqlite: bool, **options: Any) -> None:
    context.configure(
        target_metadata=Base.metadata,
        # SQLite alters most things by copying the table; autogenerate renders batch ops.
        render_as_batch=sqlite,
        compare_type=True,
        include_name=include_name,
        include_object=include_object,
        **options,
    )


def run_migrations_offline(url: str) -> None:
    """Emit the SQL of the migrations to stdout instead of running it (``--sql``)."""
    configure(
        url.startswith("sqlite"), url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    # SQLite can roll DDL back too, once the engine issues BEGIN itself (below).
    configure(sqlite, connection=connection, transactional_ddl=True if sqlite else None)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Other processes migrating the same database wait here, then find it done.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.run_migrations()


def make_migration_engine(url: str) -> AsyncEngine:
    """The engine migrations run on: one connection, no pool, whole-run transactions.

    Not db.make_engine: on SQLite this one leaves foreign keys off, since batch mode
    drops and recreates tables that other tables refer to. And Python's sqlite3 runs
    DDL outside any transaction, each statement committed by itself; issuing BEGIN
    ourselves makes a failed SQLite migration roll back whole instead of leaving a
    half-built schema that the next attempt trips over.
    """
    if not url.startswith("sqlite"):
        return create_async_engine(url, poolclass=NullPool)
    # A second migrator waits for the first's write lock up to this many seconds.
    engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": 120})

    @event.listens_for(engine.sync_engine, "connect")
    def driver_leaves_transactions_to_us(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def begin_immediate(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front: a second migrator waits for the first
        # instead of both reading "not migrated" and one failing on its first write.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


async def run_migrations_online(url: str) -> None:
    engine = make_migration_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


database_url = config.get_main_option("sqlalchemy.url") or Settings().direct_database_url
if context.is_offline_mode():
    run_migrations_offline(database_url)
else:
    asyncio.run(run_migrations_online(database_url))
