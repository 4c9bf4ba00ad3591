"""SQLite: a copy through SQLite's online backup API, and the same API to restore it.

The copy is taken in one step, so it is one consistent state even while the server
writes; the facts (revision, counts, file keys) are then read from the copy itself.
"""

from __future__ import annotations

import asyncio
import glob
import os
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

from threadline.backups.manifest import BackupError, folders_on_disk
from threadline.backups.rows import Engine, Facts

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


def _replace(scratch: Path, target: Path) -> None:
    """Rename the restored copy over the target, which first gives up its WAL (else it
    would be replayed into the new file) by switching to rollback journaling."""
    if target.exists() and target.stat().st_size > 0:
        with closing(sqlite3.connect(target, timeout=BUSY_TIMEOUT_SECONDS)) as old:
            old.execute("PRAGMA journal_mode=DELETE")
    os.replace(scratch, target)
    folders_on_disk([target], target.parent)  # before the staging folder goes


class SqliteDatabase(Engine):
    backend = "sqlite"
    file_name = "database.sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.database_url = f"sqlite+aiosqlite:///{path}"
        self.label = f"SQLite {path}"

    async def dump(self, target: Path) -> Facts:
        if not self.path.is_file():
            raise BackupError(f"no SQLite database at {self.path}")
        try:
            await asyncio.to_thread(_copy, self.path, target)
        except sqlite3.Error as exc:
            raise BackupError(f"SQLite backup of {self.path} failed: {exc}") from exc
        return await SqliteDatabase(target).facts()

    async def holds_rows(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0 and await super().holds_rows()

    async def restore(self, source: Path, finish: Callable[[Engine], Awaitable[None]]) -> None:
        """Copy the backup into a scratch file, ``finish`` it there, then rename it over
        the database file: until the rename the target is untouched, whatever fails."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for left in self.path.parent.glob(f"{glob.escape(self.path.name)}.restore-*"):
            left.unlink()  # a killed restore's scratch copy
        scratch = self.path.with_name(f"{self.path.name}.restore-{uuid.uuid4().hex}")
        try:
            await asyncio.to_thread(_copy, source, scratch)
            await finish(SqliteDatabase(scratch))
            await asyncio.to_thread(_replace, scratch, self.path)
        except sqlite3.Error as exc:
            raise BackupError(f"SQLite restore into {self.path} failed: {exc}") from exc
        finally:
            for leftover in (scratch, scratch.with_name(scratch.name + "-journal")):
                leftover.unlink(missing_ok=True)
