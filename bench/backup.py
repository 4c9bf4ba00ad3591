"""Backup and restore: size and time of `threadline backup` and `restore` for a thread of
100k messages (with reactions, replies, mentions) and 200 attachment files of 100 KB, on
PostgreSQL, restored into a second fresh database and upload folder.

usage: .venv/bin/python -m bench.backup [--messages 100000] [--files 200] [--file-kib 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.harness import cores_line, database
from bench.history import seed
from threadline.backups import create_backup, restore_backup
from threadline.config import Settings


async def add_files(dsn: str, thread: uuid.UUID, upload_dir: Path, files: int, kib: int) -> int:
    """Attachment files under the upload folder and their rows, as uploads leave them."""
    conn = await asyncpg.connect(dsn)
    try:
        uploader = await conn.fetchval("SELECT id FROM users WHERE username = 'alice'")
        rows = []
        for _ in range(files):
            attachment = uuid.uuid4()
            key = f"{thread}/{attachment.hex}"
            (upload_dir / str(thread)).mkdir(parents=True, exist_ok=True)
            (upload_dir / key).write_bytes(os.urandom(kib * 1024))
            rows.append(
                (
                    attachment,
                    thread,
                    uploader,
                    "f.pdf",
                    "application/pdf",
                    kib * 1024,
                    "DOCUMENT",
                    key,
                    datetime.now(UTC),
                )
            )
        await conn.copy_records_to_table(
            "attachments",
            records=rows,
            columns=[
                "id",
                "thread_id",
                "uploaded_by_id",
                "filename",
                "content_type",
                "size",
                "kind",
                "storage_key",
                "created_at",
            ],
        )
    finally:
        await conn.close()
    return files * kib * 1024


def settings(url: str, upload_dir: Path) -> Settings:
    return Settings(database_url=url, upload_dir=upload_dir, _env_file=None)  # type: ignore[call-arg]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--file-kib", type=int, default=100)
    args = parser.parse_args()
    print(cores_line())
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        async with database() as (dsn, url), database() as (_, target_url):
            thread = await seed(dsn, args.messages, 20)
            file_bytes = await add_files(dsn, thread, root / "uploads", args.files, args.file_kib)
            started = time.perf_counter()
            path, manifest = await create_backup(settings(url, root / "uploads"), root / "backups")
            backup_seconds = time.perf_counter() - started
            started = time.perf_counter()
            await restore_backup(settings(target_url, root / "restored"), path)
            restore_seconds = time.perf_counter() - started
        print(
            f"{manifest.counts['messages']} messages, {manifest.counts['reactions']} reactions, "
            f"{len(manifest.files)} files ({file_bytes / 2**20:.1f} MiB)"
        )
        print(
            f"backup: {backup_seconds:.2f} s, dump {manifest.database_bytes / 2**20:.1f} MiB "
            f"+ files {manifest.file_bytes / 2**20:.1f} MiB"
        )
        print(
            f"restore into an empty database and folder: {restore_seconds:.2f} s (counts checked)"
        )


if __name__ == "__main__":
    asyncio.run(main())
