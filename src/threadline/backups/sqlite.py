"""SQLite: a copy through SQLite's online backup API, and the same API to restore it.

The copy is taken in one step, so it is one consistent state even while the server
writes; the facts (revision, counts, file keys) are then read from the copy itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from threadline.backups.manifest import BackupError
from threadline.backups.rows import Facts, holds_rows, read_facts

T = TypeVar("T")
# A writer holding the database longer than this makes the backup fail, not hang.
BUSY_TIMEOUT_SECONDS = 30.0


def _copy(source: Path, target: Path) -> None:
    with (
        closing(sqlite3.connect(source, timeout=BUSY_TIMEOUT_SECONDS)) as reader,
        closing(sqlite3.connect(target, timeout=BUSY_TIMEOUT_SECONDS)) as writer,
    ):
        # pages=-1 (the default): every page in one step, under one read lock.
        reader.backup(writer)
        # The backup is one self-contained file, not a WAL database with side files.
        writer.execute("PRAGMA journal_mode=DELETE")


async def _on_file(path: Path, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await work(connection)
    except SQLAlchemyError as exc:
        raise BackupError(f"SQLite {path}: {getattr(exc, 'orig', None) or exc}") from exc
    finally:
        await engine.dispose()


class SqliteDatabase:
    backend = "sqlite"
    file_name = "database.sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def dump(self, target: Path) -> Facts:
        if not self.path.is_file():
            raise BackupError(f"no SQLite database at {self.path}")
        try:
            await asyncio.to_thread(_copy, self.path, target)
        except sqlite3.Error as exc:
            raise BackupError(f"SQLite backup of {self.path} failed: {exc}") from exc
        return await _on_file(target, read_facts)

    async def holds_rows(self) -> bool:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        return await _on_file(self.path, holds_rows)

    async def facts(self) -> Facts:
        return await _on_file(self.path, read_facts)

    async def restore(self, source: Path) -> None:
        """Copy the backup over the database file (the server must not be running)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            await asyncio.to_thread(_copy, source, self.path)
        except sqlite3.Error as exc:
            raise BackupError(f"SQLite restore into {self.path} failed: {exc}") from exc
