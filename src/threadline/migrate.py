"""Running the package's own Alembic migrations, and what schema comparison must ignore."""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Column
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from threadline.db import Database

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType
    from sqlalchemy.schema import SchemaItem

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Alembic keeps the running migration in module globals: two commands at once in one
# process would act on each other's connections (env.py locks between processes).
_ALEMBIC_COMMAND_LOCK = threading.Lock()

# Full-text search objects that the revisions create by hand, outside the models.
SEARCH_VECTOR_COLUMN = "search_vector"
SEARCH_VECTOR_INDEX = "ix_messages_search_vector"
SEARCH_FTS_TABLE = "messages_fts"


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Skip, before reflection, the FTS5 table and the shadow tables SQLite keeps for it."""
    if type_ == "table" and name is not None:
        return name != SEARCH_FTS_TABLE and not name.startswith(f"{SEARCH_FTS_TABLE}_")
    if type_ == "index":
        return name != SEARCH_VECTOR_INDEX
    return True


def include_object(
    object_: SchemaItem,
    name: str | None,
    type_: NameFilterType,
    reflected: bool,
    compare_to: SchemaItem | None,
) -> bool:
    """Skip the search column and its index, which exist in the database but not the models."""
    if type_ == "column" and name == SEARCH_VECTOR_COLUMN:
        return not (isinstance(object_, Column) and object_.table.name == "messages")
    if type_ == "index":
        return name != SEARCH_VECTOR_INDEX
    return True


def alembic_config(database_url: str, upload_dir: Path | None = None) -> Config:
    """An Alembic configuration for the packaged migrations against one database, whose
    attachment files are under ``upload_dir`` (None: no files to read)."""
    config = Config(attributes={"upload_dir": upload_dir})
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # The value goes through configparser interpolation: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str, upload_dir: Path | None = None) -> None:
    """Migrate the database to the newest revision; call it where no event loop runs."""
    # env.py drives the async engine with asyncio.run(), which a running loop forbids.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "upgrade_to_head() blocks; inside an event loop, await upgrade_to_head_async() instead"
        )
    with _ALEMBIC_COMMAND_LOCK:
        command.upgrade(alembic_config(database_url, upload_dir), "head")


async def upgrade_to_head_async(database_url: str, upload_dir: Path | None = None) -> None:
    await asyncio.to_thread(upgrade_to_head, database_url, upload_dir)


@functools.cache
def _shipped() -> tuple[str | None, frozenset[str]]:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return script.get_current_head(), frozenset(r.revision for r in script.walk_revisions())


def head_revision() -> str | None:
    return _shipped()[0]


def is_shipped(revision: str) -> bool:
    """Whether the package ships ``revision`` (one it does not is a newer version's)."""
    return revision in _shipped()[1]


def schema_problem(revision: str | None) -> str | None:
    """Why a database at ``revision`` cannot serve this code, or None if it can. A revision
    this code does not know is a newer one (a rolling upgrade migrates first): served."""
    head, known = _shipped()
    if revision is None:
        return "the database was never migrated: run `threadline migrate`"
    if revision != head and revision in known:
        return (
            f"the database is at revision {revision}, older than this threadline's {head}: "
            "run `threadline migrate`"
        )
    return None


async def current_revision_async(database_url: str) -> str | None:
    """The revision the database is at, or None if it has never been migrated."""
    db = Database(create_async_engine(database_url, poolclass=NullPool))
    try:
        return await db.schema_revision()
    finally:
        await db.dispose()
