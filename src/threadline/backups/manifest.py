"""A backup folder: ``threadline-backup-<UTC time>`` with the database, the upload files
(under ``uploads/``, by storage key) and ``manifest.json``, written last: a folder without
a readable manifest was not made by us, or not finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

FORMAT = "threadline-backup"
# Version 2 adds the database file's checksum; version 1 manifests are still read.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
PREFIX = "threadline-backup-"
MANIFEST = "manifest.json"
UPLOADS = "uploads"
CHUNK = 1 << 20
# What the database is saved as (PostgreSQL, SQLite), always at the top of the folder.
DATABASE_FILES = ("database.dump", "database.sqlite")


class BackupError(Exception):
    """A backup or restore cannot go on; the message says why in one line."""


class NotAFolder(BackupError):
    """The folder given to write backups into is a file: the operator's input is wrong."""


@dataclass
class StoredFile:
    bytes: int
    sha256: str


@dataclass
class Manifest:
    backend: str  # "postgresql" or "sqlite"
    database_file: str
    database_bytes: int
    schema_revision: str | None
    threadline_version: str
    counts: dict[str, int]
    files: dict[str, StoredFile] = field(default_factory=dict)
    # Keys that a row of the snapshot names but whose file was gone (deleted meanwhile).
    missing_files: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    seconds: float = 0.0
    # SHA-256 of the database file; None in version 1 manifests, which did not record it.
    database_sha256: str | None = None

    @property
    def file_bytes(self) -> int:
        return sum(entry.bytes for entry in self.files.values())

    def write(self, folder: Path) -> None:
        body = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}
        temporary = folder / (MANIFEST + ".partial")
        with temporary.open("w") as writer:
            writer.write(json.dumps(body, indent=2, sort_keys=True) + "\n")
            _on_disk(writer)
        os.replace(temporary, folder / MANIFEST)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The folder's manifest; BackupError if it is not a finished backup of ours."""
        try:
            body: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise BackupError(
                f"{folder} is not a threadline backup (no readable {MANIFEST})"
            ) from exc
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise BackupError(f"{folder} is not a threadline backup (unknown manifest format)")
        if body.get("format_version") not in READABLE_VERSIONS:
            raise BackupError(
                f"{folder} has backup format version {body.get('format_version')}; "
                f"this threadline reads versions {', '.join(map(str, READABLE_VERSIONS))}"
            )
        try:
            files = {key: StoredFile(**entry) for key, entry in body.pop("files").items()}
            del body["format"], body["format_version"]
            manifest = cls(files=files, **body)
        except (KeyError, TypeError, AttributeError) as exc:
            raise BackupError(f"{folder}/{MANIFEST} is damaged: {exc}") from exc
        # The database file is in the folder: a bare name of one of ours, nothing else.
        if manifest.database_file not in DATABASE_FILES or not _is_size(manifest.database_bytes):
            raise BackupError(
                f"{folder}/{MANIFEST} is damaged: database_file must be one of "
                f"{', '.join(DATABASE_FILES)} with its size in bytes"
            )
        # Summed and compared before any file is read: a size that is not one (text, a
        # negative, past what a file can be) would fail there with no backup error.
        for key, entry in manifest.files.items():
            if not _is_size(entry.bytes):
                raise BackupError(
                    f"{folder}/{MANIFEST} is damaged: file {key!r} has no size in bytes"
                )
        return manifest


def _is_size(value: object) -> bool:
    # No bool (an int to Python) and at most what a file's signed 64-bit size can be.
    return type(value) is int and 0 <= value < 2**63


def is_backup(folder: Path) -> bool:
    # Not a .partial one, manifest or not: a running backup's, which no prune may take.
    if not (folder.is_dir() and folder.name.startswith(PREFIX)) or folder.suffix == ".partial":
        return False
    try:
        Manifest.read(folder)
    except BackupError:
        return False
    return True


def key_path(root: Path, key: str) -> Path:
    """Where a storage key lives under a root. A key that would leave the root is refused,
    and so is a dot name: ours never have one, and restores stage under ``.restore-``."""
    parts = PurePosixPath(key).parts
    if not key or PurePosixPath(key).is_absolute() or any(p[:1] in (".", "") for p in parts):
        raise BackupError(f"attachment storage key {key!r} is not a plain relative path")
    return root.joinpath(*parts)


def copy_file(source: Path, target: Path) -> StoredFile:
    """Copy under a temporary name, then rename: a half-copied file never has the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as reader, temporary.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        _on_disk(writer)
    os.replace(temporary, target)
    return StoredFile(bytes=size, sha256=digest.hexdigest())


def _on_disk(writer: IO[Any]) -> None:
    """The file's data on disk before a rename names it done: after a power cut the
    rename may survive where unsynced data would not (a file of zeros, or empty)."""
    writer.flush()
    os.fsync(writer.fileno())


def folders_on_disk(paths: Iterable[Path], root: Path) -> None:
    """fsync the folders that hold ``paths``, up to and with ``root``: after a power cut a
    rename or a new name is kept only if its folder was on disk, as data before a rename."""
    for folder in {up for path in paths for up in path.parents if up.is_relative_to(root)}:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def file_sha256(path: Path) -> str:
    with path.open("rb") as reader:
        return hashlib.file_digest(reader, "sha256").hexdigest()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
