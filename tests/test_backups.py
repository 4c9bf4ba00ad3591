"""Backups: a populated deployment backed up and restored into an empty one answers alike.

The restore goes into a new database (PostgreSQL: a new database name; SQLite: a new
file) and a new upload folder, and a second server on them answers a page of messages
as the first did; the attachment files are the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from tests import factories
from tests.conftest import (
    BACKEND,
    DEV_SECRET,
    Api,
    Clients,
    Server,
    database_environment,
    database_settings,
    own_database,
    start_server,
    stop_server,
)
from tests.deployment import threadline
from threadline.backups import (
    BackupError,
    Manifest,
    NotAFolder,
    create_backup,
    database_of,
    prune_backups,
    restore_backup,
)
from threadline.backups.manifest import MANIFEST, PREFIX
from threadline.backups.postgres import find_tool, libpq_target
from threadline.config import Settings, without_passwords
from threadline.models import Attachment

EDIT = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }"
REACT = "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }"
PAGE = """
query($t: ID!) { thread(threadId: $t) { id title lastSeq
  messages(last: 50) {
    pageInfo { hasPreviousPage hasNextPage startCursor endCursor }
    edges { cursor node {
      id seq body clientId editedAt deletedAt pinned createdAt replyCount
      author { id username displayName }
      parent { id }
      edits { id previousBody editedAt editedBy { username } }
      reactions { emoji count reactedByMe users { username } }
      attachments { id filename contentType size kind width height uploadedBy { username } }
      mentions { username }
    } }
  } } }
"""


def settings_for(database_url: str, upload_dir: Path, redis_url: str | None) -> Settings:
    return Settings(
        **database_settings(database_url),
        redis_url=redis_url,
        dev_auth_secret=DEV_SECRET,  # type: ignore[arg-type]
        upload_dir=upload_dir,
        rate_limits=False,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def empty_target(tmp_path: Path, settings: Settings) -> AsyncIterator[Settings]:
    """Settings of an empty deployment: a database never migrated, an absent upload folder."""
    async with own_database(tmp_path, "restore") as url:
        redis_url = settings.redis_url if BACKEND == "postgres" else None
        yield settings_for(url, tmp_path / "restored-uploads", redis_url)


async def add_attachment(
    server: Server,
    settings: Settings,
    api: Api,
    thread_id: str,
    data: bytes,
    filename: str,
    size: tuple[int, int] | None = None,
) -> str:
    """An uploaded, unused attachment: its file under the upload folder, then its row."""
    attachment_id = uuid.uuid4()
    key = f"{thread_id}/{attachment_id.hex}"
    path = settings.upload_dir / thread_id / attachment_id.hex
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    async with server.runtime.db.transaction("test_attach") as uow:
        await uow.session.execute(
            insert(Attachment).values(
                id=attachment_id,
                thread_id=uuid.UUID(thread_id),
                uploaded_by_id=uuid.UUID(api.id),
                message_id=None,
                filename=filename,
                content_type="image/png" if size else "application/pdf",
                size=len(data),
                kind="IMAGE" if size else "DOCUMENT",
                width=size[0] if size else None,
                height=size[1] if size else None,
                storage_key=key,
                created_at=datetime.now(UTC),
            )
        )
    return str(attachment_id)


async def populate(server: Server, settings: Settings, clients: Clients) -> tuple[Api, str]:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob, title="Backed up")
    first = await factories.send(alice, thread_id, "hello @bob", clientId="c-1")
    await alice.gql(EDIT, {"m": first["id"], "b": "hello again @bob"})
    await alice.gql(EDIT, {"m": first["id"], "b": "hello a third time @bob"})
    await bob.gql(REACT, {"m": first["id"], "e": "👍"})
    await alice.gql(REACT, {"m": first["id"], "e": "👍"})
    await bob.gql(REACT, {"m": first["id"], "e": "🚀"})
    await factories.send(bob, thread_id, "a reply", parentId=first["id"])
    report = os.urandom(300_000)
    photo = os.urandom(40_000)
    attachments = [
        await add_attachment(server, settings, alice, thread_id, report, "report.pdf"),
        await add_attachment(server, settings, alice, thread_id, photo, "a.png", (640, 480)),
    ]
    await factories.send(alice, thread_id, "two files", attachmentIds=attachments)
    for n in range(20):
        await factories.send(bob if n % 2 else alice, thread_id, f"message {n}")
    # A file that no row names is not part of the deployment's data.
    stray = settings.upload_dir / "stray" / "leftover.bin"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"not referenced")
    return alice, thread_id


async def stored_files(server: Server, upload_dir: Path) -> dict[str, bytes]:
    async with server.runtime.db.reading() as session:
        keys = (await session.scalars(select(Attachment.storage_key))).all()
    return {key: (upload_dir / key).read_bytes() for key in keys}


async def test_a_restored_backup_answers_a_page_of_messages_and_serves_the_same_files(
    server: Server, settings: Settings, clients: Clients, empty_target: Settings, tmp_path: Path
) -> None:
    alice, thread_id = await populate(server, settings, clients)
    before = await alice.gql(PAGE, {"t": thread_id})
    files_before = await stored_files(server, settings.upload_dir)

    started = time.monotonic()
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    backup_seconds = time.monotonic() - started
    assert folder.name.startswith(PREFIX) and (folder / MANIFEST).is_file()
    assert set(manifest.files) == set(files_before)  # exactly the referenced files
    assert not (folder / "uploads" / "stray").exists()
    assert manifest.counts["messages"] == 23 and manifest.counts["attachments"] == 2
    assert manifest.counts["message_edits"] == 2 and manifest.counts["reactions"] == 3

    started = time.monotonic()
    await restore_backup(empty_target, folder)
    restore_seconds = time.monotonic() - started
    restored = await start_server(empty_target)
    try:
        async with httpx.AsyncClient(base_url=restored.base, timeout=30) as http:
            api = Api(http, alice.token, "alice")
            after = await api.gql(PAGE, {"t": thread_id})
        files_after = await stored_files(restored, empty_target.upload_dir)
    finally:
        await stop_server(restored)
    assert after == before
    nodes = [edge["node"] for edge in after["thread"]["messages"]["edges"]]
    assert any(n["edits"] for n in nodes) and any(n["reactions"] for n in nodes)
    assert any(n["attachments"] for n in nodes)
    assert files_after == files_before
    print(
        f"\n[{BACKEND}] backup {backup_seconds:.2f} s: database {manifest.database_bytes} bytes, "
        f"{len(manifest.files)} files {manifest.file_bytes} bytes; restore {restore_seconds:.2f} s"
    )


async def test_restore_refuses_a_deployment_with_data_unless_forced(
    server: Server, settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    alice, thread_id = await populate(server, settings, clients)
    folder, _ = await create_backup(settings, tmp_path / "backups")
    with pytest.raises(BackupError, match="database is not empty"):
        await restore_backup(settings, folder)
    await factories.send(alice, thread_id, "after the backup")
    await stop_server(server)  # restoring under a running server is not supported
    manifest = await restore_backup(settings, folder, force=True)
    again = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=again.base, timeout=30) as http:
            page = await Api(http, alice.token, "alice").gql(PAGE, {"t": thread_id})
    finally:
        await stop_server(again)
    bodies = [edge["node"]["body"] for edge in page["thread"]["messages"]["edges"]]
    assert "after the backup" not in bodies
    assert len(bodies) == manifest.counts["messages"]


async def test_restore_refuses_an_upload_folder_with_files(
    server: Server, settings: Settings, clients: Clients, empty_target: Settings, tmp_path: Path
) -> None:
    await populate(server, settings, clients)
    folder, _ = await create_backup(settings, tmp_path / "backups")
    (empty_target.upload_dir / "someone").mkdir(parents=True)
    (empty_target.upload_dir / "someone" / "file").write_bytes(b"x")
    with pytest.raises(BackupError, match=r"upload folder .* is not empty"):
        await restore_backup(empty_target, folder)


async def test_a_backup_is_consistent_while_uploads_go_on(
    server: Server, settings: Settings, clients: Clients, empty_target: Settings, tmp_path: Path
) -> None:
    alice, thread_id = await populate(server, settings, clients)
    stop = asyncio.Event()

    async def keep_uploading() -> int:
        count = 0
        while not stop.is_set():
            await add_attachment(server, settings, alice, thread_id, os.urandom(5000), "x.pdf")
            count += 1
            await asyncio.sleep(0)
        return count

    uploader = asyncio.create_task(keep_uploading())
    await asyncio.sleep(0.2)
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    stop.set()
    uploaded = await uploader
    assert uploaded > 0
    # Every row in the copy has its file in the backup, and no file without a row is in it.
    assert not manifest.missing_files
    assert len(manifest.files) == manifest.counts["attachments"]
    await restore_backup(empty_target, folder)
    restored = await start_server(empty_target)
    try:
        files = await stored_files(restored, empty_target.upload_dir)
    finally:
        await stop_server(restored)
    assert set(files) == set(manifest.files)


async def test_old_backups_are_pruned_and_folders_of_others_are_left_alone(
    server: Server, settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    await populate(server, settings, clients)
    parent = tmp_path / "backups"
    foreign = parent / f"{PREFIX}not-ours"
    foreign.mkdir(parents=True)
    (parent / "notes.txt").write_text("keep me")
    made = [(await create_backup(settings, parent, keep=2))[0] for _ in range(3)]
    assert sorted(p.name for p in parent.iterdir()) == sorted(
        [foreign.name, "notes.txt", made[1].name, made[2].name]
    )
    assert prune_backups(parent, 1) == [made[1]]


async def test_a_backup_dated_ahead_counts_among_the_newest_beside_each_one_just_made(
    settings: Settings, tmp_path: Path
) -> None:
    """A backup copied in from a machine whose clock was ahead is newer than any made here:
    with --keep 2 it stays beside the backup each run just made; the older ones go (with
    --keep 1 it goes: test_hostile_operations)."""
    parent = tmp_path / "backups"
    ahead, manifest = await create_backup(settings, parent)
    manifest.created_at = "2099-01-01T00:00:00+00:00"
    manifest.write(ahead)
    await create_backup(settings, parent, keep=2)
    made, _ = await create_backup(settings, parent, keep=2)
    assert sorted(parent.iterdir()) == sorted([ahead, made])


def chattr(flag: str, paths: Iterable[Path]) -> int:
    return subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True).returncode


async def test_a_folder_a_prune_or_a_start_cannot_wholly_delete_is_not_logged_as_removed(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """shutil.rmtree is told to ignore errors: what it could not delete must not read as
    gone in the log (an immutable file stands for a read-only mount or a busy NFS file)."""
    parent = tmp_path / "backups"
    old, _ = await create_backup(settings, parent)
    stuck = [old / "stuck", parent / f"{PREFIX}killed.partial" / "stuck"]
    stuck[1].parent.mkdir()
    for path in stuck:
        path.write_text("x")
    if chattr("+i", stuck):
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        with caplog.at_level("INFO", logger="threadline.backups"):
            await create_backup(settings, parent, keep=1)
    finally:
        assert chattr("-i", parent.rglob("stuck")) == 0
    said = [r.getMessage() for r in caplog.records]
    assert not [line for line in said if "removed" in line], said
    assert len([line for line in said if "could not remove all" in line]) == 2, said


async def test_backups_dated_ahead_count_among_the_newest_and_keep_converges(
    settings: Settings, tmp_path: Path
) -> None:
    """Three backups dated ahead and --keep 2: each run leaves the one it made and the
    newest dated ahead, not every one dated ahead beside it."""
    parent = tmp_path / "backups"
    ahead = []
    for year in (2097, 2098, 2099):
        folder, manifest = await create_backup(settings, parent)
        manifest.created_at = f"{year}-01-01T00:00:00+00:00"
        manifest.write(folder)
        ahead.append(folder)
    for _ in range(3):
        made, _ = await create_backup(settings, parent, keep=2)
        assert sorted(parent.iterdir()) == sorted([made, ahead[2]])


async def test_a_backup_refuses_a_half_restored_deployment_and_prunes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """A killed restore's files are still staged: a backup meanwhile (the compose service,
    cron) would list them as missing, and its pruning would drop the backups holding them."""
    parent = tmp_path / "backups"
    kept, _ = await create_backup(settings, parent, keep=1)
    left = settings.upload_dir / ".restore-0123abcd"
    left.mkdir(parents=True)
    with pytest.raises(BackupError, match=r"a restore did not finish .* is left"):
        await create_backup(settings, parent, keep=1)
    assert [p.name for p in parent.iterdir()] == [kept.name]


async def test_restore_refuses_a_backup_of_an_unknown_schema_or_with_a_damaged_file(
    server: Server, settings: Settings, clients: Clients, empty_target: Settings, tmp_path: Path
) -> None:
    await populate(server, settings, clients)
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    key = next(iter(manifest.files))
    (folder / "uploads" / key).write_bytes(b"truncated")
    with pytest.raises(BackupError, match="missing or damaged"):
        await restore_backup(empty_target, folder)
    body: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    body["schema_revision"] = "ffffffffffff"
    (folder / MANIFEST).write_text(json.dumps(body))
    with pytest.raises(BackupError, match="unknown to this threadline"):
        await restore_backup(empty_target, folder)
    with pytest.raises(BackupError, match="holds backups; name one"):
        await restore_backup(empty_target, folder.parent)


def flip_one_byte(path: Path) -> bytes:
    """Change one byte in the middle of a file, keeping its size; the original bytes."""
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    path.write_bytes(bytes(damaged))
    return original


async def assert_untouched(target: Settings) -> None:
    """The empty target is as it was: no table, no row, no upload folder."""
    facts = await database_of(target).facts()
    assert (facts.revision, facts.counts) == (None, {})
    assert not target.upload_dir.exists()


async def assert_restored(target: Settings, manifest: Manifest) -> None:
    facts = await database_of(target).facts()
    assert facts.counts == manifest.counts
    restored = {key: (target.upload_dir / key).read_bytes() for key in manifest.files}
    assert {key: hashlib.sha256(data).hexdigest() for key, data in restored.items()} == {
        key: entry.sha256 for key, entry in manifest.files.items()
    }
    assert sorted(p.name for p in target.upload_dir.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("tampered", ["file", "dump"])
async def test_a_restore_that_fails_a_checksum_changes_nothing_and_a_retry_works(
    tampered: str,
    server: Server,
    settings: Settings,
    clients: Clients,
    empty_target: Settings,
    tmp_path: Path,
) -> None:
    await populate(server, settings, clients)
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    assert manifest.database_sha256 is not None
    if tampered == "file":
        # The last file: the others would be copied before it is met.
        damaged = folder / "uploads" / sorted(manifest.files)[-1]
    else:
        damaged = folder / manifest.database_file
    original = flip_one_byte(damaged)
    with pytest.raises(BackupError, match="does not match its checksum"):
        await restore_backup(empty_target, folder)
    await assert_untouched(empty_target)

    damaged.write_bytes(original)  # repaired: the retry needs no --force
    await restore_backup(empty_target, folder)
    await assert_restored(empty_target, manifest)


async def test_a_restore_that_fails_after_the_database_was_restored_changes_nothing(
    server: Server, settings: Settings, clients: Clients, empty_target: Settings, tmp_path: Path
) -> None:
    await populate(server, settings, clients)
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    body: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    body["counts"]["messages"] += 1  # checksums hold; the restored rows will not match
    (folder / MANIFEST).write_text(json.dumps(body))
    with pytest.raises(BackupError, match=r"row counts .* differ"):
        await restore_backup(empty_target, folder)
    await assert_untouched(empty_target)

    body["counts"]["messages"] -= 1
    (folder / MANIFEST).write_text(json.dumps(body))
    await restore_backup(empty_target, folder)
    await assert_restored(empty_target, manifest)


async def test_a_manifest_of_format_1_without_the_database_checksum_is_still_restored(
    server: Server, settings: Settings, clients: Clients, empty_target: Settings, tmp_path: Path
) -> None:
    await populate(server, settings, clients)
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    body: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    assert body["format_version"] == 2
    body["format_version"] = 1
    del body["database_sha256"]
    (folder / MANIFEST).write_text(json.dumps(body))
    # What it records is still checked: the database file's size.
    dump = folder / manifest.database_file
    original = dump.read_bytes()
    dump.write_bytes(original + b"x")
    with pytest.raises(BackupError, match="damaged"):
        await restore_backup(empty_target, folder)
    await assert_untouched(empty_target)
    dump.write_bytes(original)
    await restore_backup(empty_target, folder)
    await assert_restored(empty_target, manifest)


async def test_the_backup_and_restore_commands(
    server: Server, settings: Settings, clients: Clients, empty_target: Settings, tmp_path: Path
) -> None:
    await populate(server, settings, clients)

    def run(target: Settings, *args: str) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            **database_environment(target.database_url),
            "UPLOAD_DIR": str(target.upload_dir),
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src"),
        }
        return subprocess.run(
            [sys.executable, "-m", "threadline", *args],
            capture_output=True,
            text=True,
            env=environment,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )

    parent = tmp_path / "backups"
    made = await asyncio.to_thread(run, settings, "backup", str(parent), "--keep", "1")
    assert made.returncode == 0, made.stderr
    assert "wrote" in made.stdout and "2 files" in made.stdout
    (folder,) = list(parent.iterdir())
    refused = await asyncio.to_thread(run, settings, "restore", str(folder))
    assert refused.returncode == 1
    assert "database is not empty" in refused.stderr and "Traceback" not in refused.stderr
    done = await asyncio.to_thread(run, empty_target, "restore", str(folder))
    assert done.returncode == 0, done.stderr
    assert "23 messages, 2 files" in done.stdout


async def test_backup_into_a_path_that_is_a_file_is_one_line_and_exit_code_2(
    settings: Settings, tmp_path: Path
) -> None:
    existing = tmp_path / "not-a-folder"
    existing.write_bytes(b"keep me")
    for target in (existing, existing / "below"):
        with pytest.raises(NotAFolder, match="is not a folder"):
            await create_backup(settings, target)
        done = await asyncio.to_thread(
            threadline, "backup", str(target), database_url=settings.database_url, tmp_path=tmp_path
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        # Besides the INFO lines that alembic logs as it loads, one line says what is wrong.
        said = [line for line in done.stderr.splitlines() if " INFO " not in line]
        assert said == [
            f"threadline: backup: {target} is not a folder (it or a folder above it is a file)"
        ]
    assert existing.read_bytes() == b"keep me"


async def test_a_database_that_cannot_be_copied_is_a_clear_error_and_leaves_no_folder(
    tmp_path: Path,
) -> None:
    if BACKEND == "postgres":
        url = f"postgresql+asyncpg://postgres:hunter2@127.0.0.1:5432/tl_missing_{uuid.uuid4().hex}"
        expected = "does not exist"
    else:
        (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
        url = f"sqlite+aiosqlite:///{tmp_path / 'garbage.db'}"
        expected = "not a database"
    parent = tmp_path / "backups"
    with pytest.raises(BackupError, match=expected) as raised:
        await create_backup(settings_for(url, tmp_path / "uploads", None), parent)
    assert "hunter2" not in str(raised.value)
    assert list(parent.iterdir()) == []


def fake_tool(folder: Path, major: int) -> None:
    """A stand-in pg_dump that answers --version as the real one of that major does."""
    folder.mkdir(parents=True)
    tool = folder / "pg_dump"
    tool.write_text(f"#!/bin/sh\necho 'pg_dump (PostgreSQL) {major}.3 (Debian {major}.3-1)'\n")
    tool.chmod(0o755)


def test_pg_dump_is_the_servers_major_version_or_the_oldest_newer_one(tmp_path: Path) -> None:
    for major in (14, 16, 17):
        fake_tool(tmp_path / str(major) / "bin", major)
    folders = [f"{tmp_path}/*/bin"]
    assert find_tool("pg_dump", 16, folders, use_path=False) == f"{tmp_path}/16/bin/pg_dump"
    assert find_tool("pg_dump", 15, folders, use_path=False) == f"{tmp_path}/16/bin/pg_dump"
    with pytest.raises(BackupError, match="no pg_dump for PostgreSQL 18 or newer") as raised:
        find_tool("pg_dump", 18, folders, use_path=False)
    assert "17/bin/pg_dump (17)" in str(raised.value)


def test_pg_tools_get_a_libpq_url_without_the_password_and_the_password_apart() -> None:
    url = (
        "postgresql+asyncpg://threadline:s3cr%40t@db.internal:6432/chat"
        "?ssl=require&prepared_statement_cache_size=0"
    )
    libpq, environment = libpq_target(url)
    assert libpq == "postgresql://threadline@db.internal:6432/chat?sslmode=require"
    assert environment["PGPASSWORD"] == "s3cr@t"
    assert (
        without_passwords("FATAL: password s3cr@t rejected", url) == "FATAL: password *** rejected"
    )


async def test_a_restore_that_would_not_fit_on_the_disk_is_refused_before_anything_is_copied(
    server: Server, settings: Settings, clients: Clients, empty_target: Settings, tmp_path: Path
) -> None:
    await populate(server, settings, clients)
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    # One file grown, sparsely, past the free space: its size is what the check reads.
    key = sorted(manifest.files)[-1]
    huge = shutil.disk_usage(tmp_path).free + 2**30
    os.truncate(folder / "uploads" / key, huge)
    body: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    body["files"][key]["bytes"] = huge
    (folder / MANIFEST).write_text(json.dumps(body))
    with pytest.raises(BackupError, match=r"needs [\d,]+ MiB on the filesystem of .* MiB is free"):
        await restore_backup(empty_target, folder)
    await assert_untouched(empty_target)


@pytest.mark.parametrize(
    ("field", "value"),
    [("file", "300000"), ("file", 10**400), ("file", -1), ("database", 10**400)],
    ids=["file-size-text", "file-size-huge", "file-size-negative", "database-size-huge"],
)
async def test_a_manifest_whose_sizes_are_not_sizes_is_damaged_and_changes_nothing(
    server: Server,
    settings: Settings,
    clients: Clients,
    empty_target: Settings,
    tmp_path: Path,
    field: str,
    value: object,
) -> None:
    """Rule: bad input gets a clear BackupError and changes nothing. Evidence: the free
    space check summed the manifest's sizes as they came, so a size written as text
    raised TypeError, and one past a float's range OverflowError, not a BackupError."""
    await populate(server, settings, clients)
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    body: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    if field == "file":
        body["files"][sorted(manifest.files)[0]]["bytes"] = value
    else:
        body["database_bytes"] = value
    (folder / MANIFEST).write_text(json.dumps(body))
    with pytest.raises(BackupError, match="is damaged"):
        await restore_backup(empty_target, folder)
    await assert_untouched(empty_target)
