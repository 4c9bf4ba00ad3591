"""Where attachment bytes live: the ``Storage`` interface and a local directory.

Services use ``Storage`` only, by opaque keys, so an object store could replace the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Big enough that a 25 MiB file is a few hundred thread hops, small enough to hold.
CHUNK_BYTES = 256 * 1024
# A restore stages its files in a folder of this prefix inside the upload folder
# (threadline.backups); one outlives its restore only if the restore was killed.
STAGING_PREFIX = ".restore-"


def unfinished_restore(upload_dir: Path) -> str | None:
    """Why no server may start on this upload folder: a restore cut short, half done maybe."""
    if left := next(upload_dir.glob(f"{STAGING_PREFIX}*"), None):
        return f"a restore did not finish ({left} is left): run `threadline restore` again"
    return None


class TooLarge(Exception):
    """The stream went past ``max_bytes``; what was written is already deleted."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    key: str
    size: int


class Storage(Protocol):
    async def save(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredFile:
        """Store the stream under a new key; TooLarge past ``max_bytes``, leaving nothing."""

    async def size(self, key: str) -> int | None:
        """The stored size, or None when the key does not exist."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``start`` to ``end`` (exclusive; None: to the end), in chunks."""

    async def delete(self, key: str) -> None:
        """Remove the file; a key that is already gone is not an error."""


class LocalStorage:
    """Files under one directory, named by random keys (``ab/abcdef...``), renamed into
    place when complete; blocking calls run in worker threads."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        """Where ``key`` lives. Keys come from save(); anything else (a tampered row) must
        not escape root: ValueError."""
        if not key or "/" not in key or ".." in key or key.startswith("/"):
            raise ValueError("not a storage key")
        return self.root / key

    async def save(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredFile:
        name = secrets.token_hex(16)
        key = f"{name[:2]}/{name}"
        final = self.path(key)
        partial = final.with_name(final.name + ".partial")
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        size = 0
        try:
            handle = await asyncio.to_thread(partial.open, "xb")
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"more than {max_bytes} bytes")
                    await asyncio.to_thread(handle.write, chunk)
            finally:
                await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, partial, final)
        except BaseException:
            # Not awaited in a thread: this must also run when the task is cancelled. A
            # cancelled thread call may have run all the same: the open, or the rename
            # (a whole file no row names, never swept).
            for path in (partial, final):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            raise
        return StoredFile(key, size)

    async def size(self, key: str) -> int | None:
        try:
            stat = await asyncio.to_thread(self.path(key).stat)
        except (OSError, ValueError):
            return None
        return stat.st_size

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(self.path(key).open, "rb")
        try:
            await asyncio.to_thread(handle.seek, start)
            left = math.inf if end is None else max(0, end - start)
            while left > 0:
                chunk = await asyncio.to_thread(handle.read, int(min(CHUNK_BYTES, left)))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def delete(self, key: str) -> None:
        try:
            path = self.path(key)
        except ValueError:
            return
        await asyncio.to_thread(path.unlink, missing_ok=True)
