"""PostgreSQL: pg_dump's custom format from one exported snapshot, and pg_restore.

The password goes to the client tools in the environment, never on a command line or in a message.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import quote, urlencode

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.backups.manifest import BackupError, folders_on_disk
from threadline.backups.rows import Engine, Facts, read_facts
from threadline.config import without_passwords
from threadline.migrate import upgrade_to_head_async
from threadline.models import Base

log = logging.getLogger(__name__)

# Where distributions put each major version's client tools, besides PATH.
TOOL_FOLDERS = (
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
    "/usr/pgsql-*/bin",  # RHEL, Fedora (PGDG)
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
)
# libpq parameters that may ride along in the URL's query; driver options do not.
LIBPQ_PARAMETERS = {"sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "host"}
VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")


def libpq_target(database_url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password, and the environment that carries the password."""
    url: URL = make_url(database_url)
    netloc = quote(url.username or "", safe="")
    netloc = f"{netloc}@" if netloc else ""
    netloc += url.host or ""
    if url.port:
        netloc += f":{url.port}"
    query = {k: str(v) for k, v in url.query.items() if k in LIBPQ_PARAMETERS}
    if "ssl" in url.query and "sslmode" not in query:  # asyncpg's spelling
        query["sslmode"] = str(url.query["ssl"])
    libpq = f"postgresql://{netloc}/{quote(url.database or '', safe='')}"
    if query:
        libpq += "?" + urlencode(query)
    environment = {**os.environ}
    environment.pop("PGPASSWORD", None)
    if url.password:
        environment["PGPASSWORD"] = str(url.password)
    return libpq, environment


def _tool_major(path: str) -> int | None:
    try:
        done = subprocess.run(  # noqa: S603 - a path we found, no shell
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    match = VERSION.search(done.stdout)
    return int(match.group(1)) if match else None


def find_tool(
    name: str, server_major: int, folders: Sequence[str] = TOOL_FOLDERS, *, use_path: bool = True
) -> str:
    """The client tool of the server's major version, else the oldest newer one.

    pg_dump refuses a server newer than itself, and pg_restore an archive newer
    than itself; a newer tool handles older servers and archives.
    """
    candidates = {path for folder in folders for path in glob.glob(f"{folder}/{name}")}
    on_path = shutil.which(name) if use_path else None
    if on_path:
        candidates.add(on_path)
    usable: list[tuple[int, str]] = []
    seen: list[str] = []
    for path in sorted(candidates):
        major = _tool_major(path)
        seen.append(f"{path} ({major or '?'})")
        if major is not None and major >= server_major:
            usable.append((major, path))
    if not usable:
        found = ", ".join(seen) or "none"
        raise BackupError(
            f"no {name} for PostgreSQL {server_major} or newer (found: {found}); "
            f"install the PostgreSQL {server_major} client tools"
        )
    return min(usable)[1]


# pg_restore's options, for a backup and for the dump a forced restore keeps aside.
RESTORE_OPTIONS = (
    "--single-transaction",
    "--exit-on-error",
    "--clean",
    "--if-exists",
    # The backup may come from a deployment with other role names.
    "--no-owner",
    "--no-privileges",
)


class PostgresDatabase(Engine):
    backend = "postgresql"
    file_name = "database.dump"
    label = "PostgreSQL"

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def _run(self, tool: str, *arguments: str) -> None:
        """Run a client tool on this database, the password in its environment."""
        libpq, environment = libpq_target(self.database_url)
        process = await asyncio.create_subprocess_exec(
            tool,
            f"--dbname={libpq}",
            *arguments,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()[-3:]
            detail = (
                without_passwords(" / ".join(lines), self.database_url)
                or f"exit {process.returncode}"
            )
            raise BackupError(f"{Path(tool).name} failed: {detail}")

    async def _server_major(self, connection: AsyncConnection) -> int:
        number = (await connection.execute(text("SHOW server_version_num"))).scalar_one()
        return int(number) // 10000

    async def dump(self, target: Path) -> Facts:
        """pg_dump from the snapshot this repeatable-read transaction exports, and the
        facts read in it: the same state of the database."""

        async def in_snapshot(connection: AsyncConnection) -> Facts:
            snapshot = (await connection.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
            facts = await read_facts(connection)
            tool = find_tool("pg_dump", await self._server_major(connection))
            # The exporting transaction stays open until pg_dump is done with it.
            await self._run(tool, "--format=custom", f"--snapshot={snapshot}", f"--file={target}")
            return facts

        return await self._on_connection(
            in_snapshot, isolation_level="REPEATABLE READ", postgresql_readonly=True
        )

    async def restore(self, source: Path, finish: Callable[[Engine], Awaitable[None]]) -> None:
        """pg_restore in one transaction (objects of the dump that exist are replaced),
        then ``finish``; if that fails, the database is put back as it was: an empty one
        is made empty again, one with data (a forced restore) gets its own dump back.
        """
        tool = find_tool("pg_restore", await self._on_connection(self._server_major))
        before = await self.facts()
        aside = Path(tempfile.mkdtemp(prefix="threadline-restore-"))  # private: 0700
        kept = False
        try:
            saved = None
            if any(before.counts.values()):
                # pg_restore commits: what a forced restore replaces is kept aside first.
                saved = aside / self.file_name
                await self.dump(saved)
                folders_on_disk([saved], aside.parent)  # pg_dump syncs the file, not its folder
                # Left there if the restore is killed: the one copy of what it replaces.
                log.info("restore: the database's contents are kept in %s until it is done", saved)
            await self._run(tool, *RESTORE_OPTIONS, str(source))
            try:
                await finish(self)
            except BaseException:
                if saved is None:  # empty before: empty again, so a retry needs no --force
                    await self._drop_restored(migrated=before.revision is not None)
                    raise
                try:
                    await self._drop_restored(migrated=False)
                    await self._run(tool, *RESTORE_OPTIONS, str(saved))
                except BackupError as exc:
                    kept = True
                    raise BackupError(
                        f"the restore failed and the database's previous contents could not "
                        f"be put back ({exc}); they are kept in {saved} (pg_restore it)"
                    ) from exc
                raise
        finally:
            if not kept:
                shutil.rmtree(aside, ignore_errors=True)

    async def _drop_restored(self, *, migrated: bool) -> None:
        async def drop(connection: AsyncConnection) -> None:
            for name in ["alembic_version", *(t.name for t in Base.metadata.sorted_tables)]:
                await connection.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))

        await self._on_connection(drop)
        if migrated:  # it was migrated and unused: so it is again
            await upgrade_to_head_async(self.database_url)
