"""Backups: the database and the upload files it references, as one consistent folder.

``create_backup`` copies the database, then exactly the files its attachment rows name,
and writes the manifest last; ``restore_backup`` brings a backup into an empty deployment.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import importlib.metadata
import logging
import os
import shutil
import time
import uuid
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from threadline.backups.manifest import (
    MANIFEST,
    PREFIX,
    UPLOADS,
    BackupError,
    Manifest,
    NotAFolder,
    StoredFile,
    copy_file,
    file_sha256,
    folders_on_disk,
    is_backup,
    key_path,
    remove_tree,
)
from threadline.backups.postgres import PostgresDatabase
from threadline.backups.rows import Engine
from threadline.backups.sqlite import SqliteDatabase
from threadline.config import ConfigError, Settings
from threadline.migrate import head_revision, is_shipped, upgrade_to_head_async
from threadline.uploads.storage import STAGING_PREFIX, unfinished_restore

__all__ = [
    "BackupError",
    "Manifest",
    "NotAFolder",
    "create_backup",
    "prune_backups",
    "restore_backup",
]

log = logging.getLogger(__name__)


def database_of(settings: Settings) -> SqliteDatabase | PostgresDatabase:
    if settings.is_sqlite:
        if settings.sqlite_path is None:
            raise BackupError("an in-memory SQLite database cannot be backed up or restored")
        return SqliteDatabase(settings.sqlite_path)
    if settings.database_url.startswith("postgresql"):
        try:
            # pg_dump imports a snapshot and sets up its session: past any pooler.
            return PostgresDatabase(settings.direct_database_url)
        except ConfigError as exc:
            raise BackupError(str(exc)) from None
    raise BackupError("DATABASE_URL is neither PostgreSQL nor SQLite")


def _version() -> str:
    try:
        return importlib.metadata.version("threadline")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _lock(folder: Path, flags: int = fcntl.LOCK_EX) -> int:
    """A descriptor of ``folder`` holding its flock (BlockingIOError if another holds it,
    with LOCK_NB); the kernel lets go when it is closed or its process ends, even by SIGKILL."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, flags)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _remove(folder: Path, message: str, *args: object) -> None:
    remove_tree(folder)  # which stops at nothing it cannot delete
    if folder.exists():
        log.warning("backup: could not remove all of %s; the next run retries", folder)
    else:
        log.info(message, *args)


def _start(parent: Path) -> tuple[Path, int]:
    """A new ``<name>.partial`` folder under ``parent``, named by the time, and its lock,
    held until the backup is done; first, the ``.partial`` folders no process holds go:
    left by a backup or a prune that was killed."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise NotAFolder(f"{parent} is not a folder (it or a folder above it is a file)") from exc
    except OSError as exc:
        raise BackupError(f"cannot create {parent}: {exc.strerror or exc}") from exc
    # Held while a folder is made and locked: no run sees one unlocked before its lock.
    guard = _lock(parent)
    try:
        for left in parent.glob(f"{PREFIX}*.partial"):
            with suppress(OSError):  # locked by a running backup, or not a folder, or gone
                held = _lock(left, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _remove(left, "backup: removed %s, left by a backup or prune cut short", left)
                os.close(held)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name, number = f"{PREFIX}{stamp}", 1
        while (parent / name).exists() or (parent / f"{name}.partial").exists():
            number += 1
            name = f"{PREFIX}{stamp}-{number}"
        work = parent / f"{name}.partial"
        try:
            # The owner's alone: a backup holds every message, address and file.
            work.mkdir(mode=0o700)
        except OSError as exc:
            raise BackupError(f"cannot write in {parent}: {exc.strerror or exc}") from exc
        return work, _lock(work)
    finally:
        os.close(guard)


def _copy_files(
    upload_dir: Path, work: Path, keys: list[str]
) -> tuple[dict[str, StoredFile], list[str]]:
    """Copy the named files; (what was copied, keys whose file was gone)."""
    files: dict[str, StoredFile] = {}
    missing: list[str] = []
    for key in keys:
        try:
            files[key] = copy_file(key_path(upload_dir, key), key_path(work / UPLOADS, key))
        except FileNotFoundError:
            missing.append(key)
    return files, missing


def _finish(work: Path, manifest: Manifest, keep: int) -> Path:
    manifest.write(work)
    # Every name in the folder on disk before it takes its final name; that name before older go.
    folders_on_disk(work.rglob("*"), work)
    final = work.with_name(work.name.removesuffix(".partial"))
    os.replace(work, final)
    folders_on_disk([final], work.parent)
    prune_backups(work.parent, keep, made=final)
    return final


async def create_backup(
    settings: Settings, parent: Path, *, keep: int = 7
) -> tuple[Path, Manifest]:
    """Write one backup folder under ``parent``, then prune to the newest ``keep``.

    The files copied are those the copy's attachment rows name (complete: uploads write
    the file before the row); one deleted since the snapshot is recorded as missing.
    """
    if keep < 1:
        raise BackupError("--keep must be at least 1")
    # A killed restore's staged files would be listed as missing, and the prune would
    # drop the backups that hold them.
    if problem := unfinished_restore(settings.upload_dir):
        raise BackupError(problem)
    database = database_of(settings)
    started = time.monotonic()
    # File work runs in a thread: a server in this process keeps serving meanwhile.
    work, held = await asyncio.to_thread(_start, parent)
    try:
        dump = work / database.file_name
        facts = await database.dump(dump)
        dump_sha256 = await asyncio.to_thread(file_sha256, dump)
        files, missing = await asyncio.to_thread(
            _copy_files, settings.upload_dir, work, facts.storage_keys
        )
        if missing:
            log.warning(
                "backup: %d attachment file(s) named in the snapshot were gone (deleted "
                "since); their rows are restored without files",
                len(missing),
            )
        manifest = Manifest(
            backend=database.backend,
            database_file=database.file_name,
            database_bytes=dump.stat().st_size,
            database_sha256=dump_sha256,
            schema_revision=facts.revision,
            threadline_version=_version(),
            counts=facts.counts,
            files=files,
            missing_files=missing,
            seconds=round(time.monotonic() - started, 3),
        )
        final = await asyncio.to_thread(_finish, work, manifest, keep)
    except BaseException:
        remove_tree(work)
        raise
    finally:
        os.close(held)  # the folder is whole or gone
    return final, manifest


def prune_backups(parent: Path, keep: int, *, made: Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` backups in ``parent``; only folders we made.
    The one just ``made`` is one of them whatever the others' manifests say their dates
    are (a backup copied in from a machine whose clock was ahead would otherwise win); so
    is any newer than it not dated ahead of the clock: a concurrent run's, whose own
    prune drops this one in its turn."""
    # One prune at a time: two at once would rename the same folder, and one fail.
    guard = _lock(parent)
    try:
        dates = {
            path: Manifest.read(path).created_at for path in parent.iterdir() if is_backup(path)
        }
        ours = sorted(dates, key=lambda path: (dates[path], path.name))
        after, spare = (ours.index(made), keep - 1) if made in ours else (len(ours), keep)
        now = datetime.now(UTC).isoformat()
        others = [p for i, p in enumerate(ours) if i < after or (i > after and dates[p] > now)]
        removed = others[: max(len(others) - spare, 0)]
        for path in removed:
            # A .partial folder first, then no manifest: a deletion cut short leaves what the
            # next run deletes, never a folder that looks whole (nor one no run prunes).
            doomed = path.rename(path.with_name(f"{path.name}.partial"))
            folders_on_disk([doomed], parent)
            (doomed / MANIFEST).unlink(missing_ok=True)
            _remove(doomed, "backup: removed %s (keeping the newest %d)", path, keep)
        return removed
    finally:
        os.close(guard)


# Restored files are staged under STAGING_PREFIX inside the upload folder: one filesystem,
# so moving them into place is a rename (beside it would be another volume under compose,
# where the upload folder is a mount point and its parent is not writable by the app).


def _upload_dir_has_files(folder: Path) -> bool:
    return any(
        path.is_file()
        for path in folder.rglob("*")
        if not path.relative_to(folder).parts[0].startswith(STAGING_PREFIX)
    )


def _resolve(path: Path) -> Path:
    """The backup folder; a folder of backups is refused with the newest one's name."""
    if is_backup(path):
        return path
    if path.is_dir():
        inside = sorted((p for p in path.iterdir() if is_backup(p)), key=lambda p: p.name)
        if inside:
            raise BackupError(f"{path} holds backups; name one, e.g. {inside[-1]}")
    return path  # Manifest.read says what is wrong with it


def _check_backup(folder: Path, manifest: Manifest) -> None:
    """Every checksum the manifest records, checked before anything of the target changes."""
    dump = folder / manifest.database_file
    if not dump.is_file():
        raise BackupError(f"{dump} is missing: the backup is incomplete")
    if dump.stat().st_size != manifest.database_bytes:
        raise BackupError(f"the backup's {manifest.database_file} is damaged (its size differs)")
    # Version 1 manifests recorded no checksum of the database: their size is what is checked.
    if manifest.database_sha256 is not None and file_sha256(dump) != manifest.database_sha256:
        raise BackupError(f"the backup's {manifest.database_file} does not match its checksum")
    for key, entry in manifest.files.items():
        stored = key_path(folder / UPLOADS, key)
        if not stored.is_file() or stored.stat().st_size != entry.bytes:
            raise BackupError(f"the backup's copy of attachment file {key!r} is missing or damaged")


# Left free after a restore: a disk filled to its last byte fails the server's next write.
MIB = 1024 * 1024
ROOM_MARGIN_BYTES = 64 * MIB


def _check_room(
    upload_dir: Path, manifest: Manifest, database: SqliteDatabase | PostgresDatabase
) -> None:
    """Refuse, before anything is copied, a restore whose files (and a SQLite database's
    scratch copy) do not fit beside what is there: one that fills the disk fails midway.
    A PostgreSQL server's own disk is out of sight from here."""
    wanted = [(upload_dir, manifest.file_bytes)]
    if isinstance(database, SqliteDatabase):
        wanted.append((database.path.parent, manifest.database_bytes))
    needs: dict[int, tuple[Path, int]] = {}  # per filesystem: a folder on it, bytes
    for folder, size in wanted:
        existing = next(path for path in (folder, *folder.parents) if path.exists())
        device = existing.stat().st_dev
        on_device, before = needs.get(device, (existing, 0))
        needs[device] = (on_device, before + size)
    for existing, size in needs.values():
        free = shutil.disk_usage(existing).free
        if size + ROOM_MARGIN_BYTES > free:
            raise BackupError(
                f"the restore needs {(size + ROOM_MARGIN_BYTES) / MIB:,.0f} MiB on the filesystem "
                f"of {existing} (the backup's files, with {ROOM_MARGIN_BYTES / MIB:,.0f} MiB to "
                f"spare) and {free / MIB:,.0f} MiB is free: make room, then restore again"
            )


def _stage_files(folder: Path, manifest: Manifest, upload_dir: Path) -> Path:
    """The backup's files copied and checked into a staging folder; the target is untouched."""
    existing = next(path for path in (upload_dir, *upload_dir.parents) if path.exists())
    upload_dir.mkdir(parents=True, exist_ok=True)
    staging = upload_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        for key, entry in manifest.files.items():
            staged = copy_file(key_path(folder / UPLOADS, key), key_path(staging, key))
            if staged != entry:
                raise BackupError(
                    f"attachment file {key!r} in the backup does not match its checksum"
                )
        # The staging folder, which marks the restore unfinished, on disk before the target changes.
        folders_on_disk([staging, *staging.rglob("*")], existing)
    except BaseException:
        remove_tree(staging)
        raise
    return staging


def _move_into_place(staging: Path, manifest: Manifest, upload_dir: Path) -> None:
    for key in manifest.files:
        target = key_path(upload_dir, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(key_path(staging, key), target)
    # In place on disk before the staging folder goes.
    folders_on_disk([key_path(upload_dir, key) for key in manifest.files], upload_dir)


async def restore_backup(settings: Settings, path: Path, *, force: bool = False) -> Manifest:
    """Bring a backup's database and files into this deployment, then migrate to head.

    Refuses a target with rows or files unless ``force``; the server must not run meanwhile.
    Checksums are verified before the target changes, files move into place once the
    database is restored, and a failure leaves an empty target empty (a retry needs no force).
    """
    folder = await asyncio.to_thread(_resolve, path)
    manifest = await asyncio.to_thread(Manifest.read, folder)
    database = database_of(settings)
    if manifest.backend != database.backend:
        raise BackupError(
            f"the backup is of a {manifest.backend} database; DATABASE_URL is {database.backend}"
        )
    revision = manifest.schema_revision
    if revision is not None and not is_shipped(revision):
        raise BackupError(
            f"the backup's schema revision {revision} is unknown to this threadline "
            "(made by a newer version?): restore it with that version or newer"
        )
    await asyncio.to_thread(_check_room, settings.upload_dir, manifest, database)
    await asyncio.to_thread(_check_backup, folder, manifest)
    if not force:
        if await database.holds_rows():
            raise BackupError("the database is not empty; restore with --force to replace it")
        if await asyncio.to_thread(_upload_dir_has_files, settings.upload_dir):
            raise BackupError(
                f"the upload folder {settings.upload_dir} is not empty; "
                "restore with --force to replace its files"
            )
    upload_dir_was_there = settings.upload_dir.exists()
    try:
        staging = await asyncio.to_thread(_stage_files, folder, manifest, settings.upload_dir)
        try:
            finish = functools.partial(_finish_restore, manifest, staging)
            await database.restore(folder / manifest.database_file, finish)
            await asyncio.to_thread(_move_into_place, staging, manifest, settings.upload_dir)
            # Done: a killed restore's staging folders, which marked it unfinished, go too.
            for left in settings.upload_dir.glob(f"{STAGING_PREFIX}*"):
                await asyncio.to_thread(remove_tree, left)
        finally:
            await asyncio.to_thread(remove_tree, staging)
    except BaseException:
        if not upload_dir_was_there:
            await asyncio.to_thread(remove_tree, settings.upload_dir)
        raise
    return manifest


async def _finish_restore(manifest: Manifest, files: Path, database: Engine) -> None:
    """What runs on the restored database (SQLite: its scratch copy) before the restore is
    done; ``files``: its attachment files, staged."""
    if manifest.schema_revision != head_revision():
        await upgrade_to_head_async(database.database_url, files)
        return
    # Same schema: the restored rows must be exactly the backed-up ones.
    counts = (await database.facts()).counts
    if counts != manifest.counts:
        raise BackupError(f"restored row counts {counts} differ from the backup's")
