"""Hostile and damaged inputs to what an operator runs: restore, backup, migrate, settings.

Each test names the rule it holds the code to; the commands run as an operator runs
them (a process of their own) on real databases and real files.
"""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests import factories
from tests.conftest import (
    Clients,
    Server,
    own_database,
    stop_server,
)
from tests.deployment import closed_port, threadline, variant
from tests.test_backups import populate, settings_for
from tests.test_readiness import answers
from threadline.backups import BackupError, create_backup, database_of, restore_backup
from threadline.backups.manifest import MANIFEST, UPLOADS
from threadline.config import ConfigError, Settings, load_settings
from threadline.migrate import upgrade_to_head_async


def said(stderr: str) -> list[str]:
    """The command's own lines: not the INFO lines alembic logs as it loads."""
    return [line for line in stderr.splitlines() if " INFO " not in line]


@pytest.fixture
async def unmigrated_database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A database of its own that no migration has touched."""
    async with own_database(tmp_path, "bare") as url:
        yield url


@pytest.fixture
async def migrated_database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A database of its own, migrated to head and empty."""
    async with own_database(tmp_path, "hostile") as url:
        await upgrade_to_head_async(url)
        yield url


async def test_a_forced_restore_that_fails_keeps_the_data_that_was_there(
    server: Server, settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """Rule (restore_backup's docstring, the brief): a failed restore must not lose the
    data that was there. Evidence: on PostgreSQL, `restore --force` of a backup whose
    manifest lies about a row count ran pg_restore (committed, replacing every table),
    then failed the count check and exited 1 with "restore failed: restored row counts
    ... differ", leaving the backup's rows in place of the deployment's: the users and
    messages written since the backup were gone, though the operator was told the restore
    failed. (SQLite restores into a scratch file and is untouched.)"""
    alice, thread_id = await populate(server, settings, clients)
    folder, _ = await create_backup(settings, tmp_path / "backups")
    await factories.send(alice, thread_id, "written after the backup")
    await clients.users("dora")  # a user the backup does not have
    await stop_server(server)
    before = (await database_of(settings).facts()).counts
    body: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    body["counts"]["messages"] += 7  # the checksums hold; the restored rows will not match
    (folder / MANIFEST).write_text(json.dumps(body))

    with pytest.raises(BackupError, match=r"row counts .* differ"):
        await restore_backup(settings, folder, force=True)
    assert (await database_of(settings).facts()).counts == before


async def test_a_backup_is_readable_by_its_owner_alone(settings: Settings, tmp_path: Path) -> None:
    """Rule: a backup holds every message, e-mail address and file of the deployment; it
    must not be readable by other accounts on the machine. Evidence: under the usual umask
    022 the backup folder was drwxr-xr-x and database.sqlite / database.dump -rw-r--r--."""
    folder, _ = await create_backup(settings, tmp_path / "backups")
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0, oct(folder.stat().st_mode)


async def test_migrate_on_a_database_ahead_of_the_code_is_one_line(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """Rule (README: errors are one line and a non-zero exit): `threadline migrate` on a
    database migrated by a newer threadline must say so. Evidence: a 104-line traceback
    ending in alembic's "CommandError: Can't locate revision identified by 'ffffffffffff'"."""
    engine = create_async_engine(migrated_database_url, poolclass=NullPool)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    await engine.dispose()
    done = threadline("migrate", database_url=migrated_database_url, tmp_path=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = said(done.stderr)
    assert line.startswith("threadline: ") and "ffffffffffff" in line


@pytest.mark.parametrize(
    "command", [["migrate"], ["seed"], ["token", "alice"], ["users", "set-role", "alice", "admin"]]
)
def test_an_unreachable_database_is_one_line_without_the_password(
    command: list[str], tmp_path: Path
) -> None:
    """Rule: an unreachable database is a one-line error and a non-zero exit, without the
    password. Evidence: `threadline migrate` and `threadline seed` printed a traceback of
    some 140 lines ending in ConnectionRefusedError; `token` and `users set-role` printed
    the API's advice to clients ("Retry (sendMessage with the same clientId ...")."""
    url = f"postgresql+asyncpg://tl:hunter2@127.0.0.1:{closed_port()}/threadline"
    done = threadline(*command, database_url=url, tmp_path=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    (line,) = said(done.stderr)
    assert line.startswith("threadline: ") and "database" in line and "clientId" not in line


@pytest.mark.parametrize(
    "url", ["garbage", "mysql://tl:hunter2@db/threadline", "postgresql+asyncpg://tl:hunter2@h:x/d"]
)
def test_a_malformed_database_url_is_a_configuration_error(url: str, tmp_path: Path) -> None:
    """Rule (config.py: refuse configurations that cannot be right, one line): DATABASE_URL
    that is not a URL, or not PostgreSQL or SQLite, is a configuration error (exit 2).
    Evidence: `DATABASE_URL=garbage threadline migrate` printed sqlalchemy's ArgumentError
    traceback; a mysql:// URL a ModuleNotFoundError traceback for MySQLdb."""
    with pytest.raises(ConfigError, match="DATABASE_URL") as raised:
        load_settings(database_url=url, _env_file=None)
    assert "hunter2" not in str(raised.value)
    done = threadline("migrate", database_url=url, tmp_path=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    (line,) = said(done.stderr)
    assert line.startswith("threadline: ") and "DATABASE_URL" in line


async def test_a_restore_into_an_upload_folder_that_cannot_be_made_is_one_line(
    settings: Settings, migrated_database_url: str, tmp_path: Path
) -> None:
    """Rule: `threadline restore` says what is wrong in one line (README: errors are one
    line). Evidence: with UPLOAD_DIR below a regular file, restore printed a traceback
    ending in "NotADirectoryError: [Errno 20] Not a directory: 'afile/uploads'"."""
    folder, _ = await create_backup(settings, tmp_path / "backups")
    (tmp_path / "afile").write_bytes(b"keep me")
    done = threadline(
        "restore",
        str(folder),
        database_url=migrated_database_url,
        tmp_path=tmp_path,
        UPLOAD_DIR=str(tmp_path / "afile" / "uploads"),
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = said(done.stderr)
    assert line.startswith("threadline: restore failed: ") and "afile" in line
    assert (tmp_path / "afile").read_bytes() == b"keep me"


def test_migrate_of_a_sqlite_file_below_a_regular_file_is_one_line(tmp_path: Path) -> None:
    """Rule: one line and a non-zero exit. Evidence: `DATABASE_URL=sqlite+aiosqlite:///
    ./afile/db.sqlite threadline migrate`, afile a regular file, printed a traceback ending
    in "FileExistsError: [Errno 17] File exists: 'afile'"."""
    (tmp_path / "afile").write_bytes(b"keep me")
    url = f"sqlite+aiosqlite:///{tmp_path / 'afile' / 'db.sqlite'}"
    done = threadline("migrate", database_url=url, tmp_path=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = said(done.stderr)
    assert line.startswith("threadline: migrate: ") and "afile" in line


async def test_readyz_is_503_on_a_database_that_was_never_migrated(
    settings: Settings, unmigrated_database_url: str
) -> None:
    """Rule (README: /readyz is what a load balancer routes by): a server whose database
    has none of the tables it needs is not ready. Evidence: `threadline serve` on a new
    PostgreSQL database (serve migrates only SQLite; `migrate` not run yet) answered
    /readyz 200 {"status":"ok","database":"ok"}, while every query failed with
    'relation "users" does not exist'."""
    [response] = await answers(variant(settings, database_url=unmigrated_database_url), "/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "down"


def test_set_role_on_a_database_that_was_never_migrated_is_one_line(
    unmigrated_database_url: str, tmp_path: Path
) -> None:
    """Rule: one line and exit 1 (test_commands: "a message, not a traceback"). Evidence:
    `threadline users set-role alice owner` (and `threadline token` on PostgreSQL) on a
    database `migrate` has not run on printed sqlalchemy's ProgrammingError traceback
    ('relation "users" does not exist')."""
    done = threadline(
        "users",
        "set-role",
        "alice",
        "owner",
        database_url=unmigrated_database_url,
        tmp_path=tmp_path,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = said(done.stderr)
    assert line.startswith("threadline: ")


@pytest.mark.parametrize(
    "url",
    [
        "garbage",
        "http://:hunter2@cache:6379/0",
        "redis://:hunter2@cache:6379/0?socket_timeout=soon",
    ],
)
def test_a_malformed_redis_url_is_a_configuration_error(url: str, tmp_path: Path) -> None:
    """Rule (config.py: refuse configurations that cannot be right, one line, exit 2):
    REDIS_URL must be a redis://, rediss:// or unix:// URL. Evidence: with REDIS_URL=garbage
    `threadline users set-role bob admin` printed a 38-line traceback ending in redis-py's
    "ValueError: Redis URL must specify one of the following schemes"; with an option
    redis-py cannot read (socket_timeout=soon) the check passed and the command died with
    redis-py's traceback ("Invalid value for 'socket_timeout' in connection URL")."""
    with pytest.raises(ConfigError, match="REDIS_URL") as raised:
        load_settings(redis_url=url, _env_file=None)
    assert "hunter2" not in str(raised.value)
    done = threadline(
        "users",
        "set-role",
        "bob",
        "admin",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        tmp_path=tmp_path,
        REDIS_URL=url,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    (line,) = said(done.stderr)
    assert line.startswith("threadline: ") and "REDIS_URL" in line


@pytest.mark.parametrize("content", ["", "\n", "short"])
def test_a_kept_secret_file_that_is_empty_or_damaged_is_refused(
    content: str, tmp_path: Path
) -> None:
    """Rule (config.py: the kept secret is "a random secret"; CONTRACT: signed attachment
    URLs cannot be forged): a kept secret file that is empty or damaged must not become the
    key. Evidence: `_kept_secret` creates the file (O_EXCL), then writes it: a crash or a
    full disk in between leaves it empty, and a process starting at that moment reads it
    empty too. With an empty .threadline-signing-secret beside the SQLite file, every
    attachment URL was signed with HMAC key "" (anyone can sign); with an empty
    .threadline-dev-secret, `threadline token` printed PyJWT's traceback "InvalidKeyError:
    HMAC key must not be empty"."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / ".threadline-signing-secret").write_text(content)
    (folder / ".threadline-dev-secret").write_text(content)
    url = f"sqlite+aiosqlite:///{folder / 'db.sqlite'}"
    settings = load_settings(database_url=url, _env_file=None)
    with pytest.raises(ConfigError, match="threadline-signing-secret"):
        settings.resolve_signing_secret()
    done = threadline("token", "alice", database_url=url, tmp_path=tmp_path, DEV_AUTH_SECRET="")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = said(done.stderr)
    assert line.startswith("threadline: ") and ".threadline-dev-secret" in line


@pytest.mark.parametrize("ttl", ["0", "-5"])
def test_a_token_lifetime_that_is_not_positive_is_refused(ttl: str, tmp_path: Path) -> None:
    """Rule (the brief's: a bad value is a clear error and a non-zero exit, not silently
    used): `threadline token --ttl` is a lifetime in seconds. Evidence: `--ttl=0` and
    `--ttl=-5` exited 0 and printed a token already expired (exp <= iat), which every
    request then refuses as expired."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'db.sqlite'}"
    done = threadline("token", "alice", f"--ttl={ttl}", database_url=url, tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stdout == "" and "--ttl" in done.stderr


@pytest.mark.parametrize("database_file", ["outside", 5])
async def test_a_manifest_naming_a_database_file_outside_its_folder_is_refused(
    database_file: object, settings: Settings, migrated_database_url: str, tmp_path: Path
) -> None:
    """Rule (manifest.py: a backup is one folder holding the database, the files and the
    manifest): a restore reads the backup's own folder, and a damaged manifest is a
    BackupError. Evidence: a manifest whose database_file was "../../elsewhere/
    database.sqlite" was restored from that file outside the folder (exit 0), and one
    whose database_file was 5 ended in "TypeError: unsupported operand type(s) for /"."""
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    body: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    if database_file == "outside":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (folder / manifest.database_file).rename(elsewhere / manifest.database_file)
        body["database_file"] = f"../../elsewhere/{manifest.database_file}"
    else:
        body["database_file"] = database_file
    (folder / MANIFEST).write_text(json.dumps(body))
    target = settings_for(migrated_database_url, tmp_path / "restored-uploads", None)
    with pytest.raises(BackupError, match="damaged"):
        await restore_backup(target, folder)


async def test_seed_refuses_a_production_deployment(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """Rule (README: seed is demo data "for a first look"; production refuses development
    auth): `threadline seed` must not put demo users and messages into a production
    database. Evidence: with THREADLINE_ENV=production (and its Clerk keys and signing
    secret) it exited 0 with "seeded users alice, bob, carol; 2 threads; 5 messages",
    taking the usernames alice, bob and carol from the deployment's real users."""
    done = threadline(
        "seed",
        database_url=migrated_database_url,
        tmp_path=tmp_path,
        THREADLINE_ENV="production",
        DEV_AUTH_SECRET="",
        CLERK_JWKS_URL="https://clerk.example.com/.well-known/jwks.json",
        ATTACHMENT_SIGNING_SECRET="s" * 40,
    )
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr
    (line,) = said(done.stderr)
    assert line.startswith("threadline: ") and "production" in line
    facts = await database_of(settings_for(migrated_database_url, tmp_path, None)).facts()
    assert facts.counts["users"] == 0


async def test_a_backup_copied_in_with_a_later_date_does_not_prune_the_one_just_made(
    settings: Settings, tmp_path: Path
) -> None:
    """Rule (`backup --keep N`: keep the newest N): the backup just made is one of them.
    Evidence: beside a backup whose manifest said 2999 (copied from a machine whose clock
    was ahead), `create_backup(keep=1)` deleted the backup it had just made, returned its
    path anyway, and kept the copied one."""
    parent = tmp_path / "backups"
    copied, _ = await create_backup(settings, parent)
    body: dict[str, Any] = json.loads((copied / MANIFEST).read_text())
    body["created_at"] = "2999-01-01T00:00:00+00:00"
    (copied / MANIFEST).write_text(json.dumps(body))
    made, _ = await create_backup(settings, parent, keep=1)
    assert made.is_dir()
    assert [path.name for path in parent.iterdir()] == [made.name]


@pytest.mark.parametrize("prefix", [".restore-0123/", ".hidden/", "../"])
async def test_a_manifest_key_with_a_dot_name_is_refused(
    prefix: str,
    server: Server,
    settings: Settings,
    clients: Clients,
    migrated_database_url: str,
    tmp_path: Path,
) -> None:
    """Rule (storage keys are the server's own `xx/<hex>`; restores stage under
    `.restore-*` in the upload folder, which the next restore deletes as stale): a key
    with a dot name is damage. Evidence: a key `.restore-0123/...` was restored (exit 0)
    into a folder the next restore removed, losing the file."""
    await populate(server, settings, clients)
    folder, _ = await create_backup(settings, tmp_path / "backups")
    body: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    key = next(iter(body["files"]))
    moved = prefix + key
    if not prefix.startswith(".."):
        target_file = folder / UPLOADS / moved
        target_file.parent.mkdir(parents=True)
        (folder / UPLOADS / key).rename(target_file)
    body["files"][moved] = body["files"].pop(key)
    (folder / MANIFEST).write_text(json.dumps(body))
    target = settings_for(migrated_database_url, tmp_path / "restored-uploads", None)
    with pytest.raises(BackupError, match="not a plain relative path"):
        await restore_backup(target, folder)


async def test_a_manifest_nested_past_the_parsers_depth_is_a_damaged_backup(
    settings: Settings, migrated_database_url: str, tmp_path: Path
) -> None:
    """Rule (README: errors are one line; a failed backup run must not be reported for a
    good one). Evidence: a backup folder whose manifest.json was brackets nested 100,000
    deep made `threadline restore` of it, and every later `threadline backup` into its
    folder (the prune reads each manifest), die with a RecursionError traceback, exit 1,
    though the new backup had been written."""
    backups = tmp_path / "backups"
    damaged = backups / "threadline-backup-20200101T000000Z"
    damaged.mkdir(parents=True)
    (damaged / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    done = threadline(
        "restore", str(damaged), database_url=migrated_database_url, tmp_path=tmp_path
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = said(done.stderr)
    assert line.startswith("threadline: restore failed: ") and "not a threadline backup" in line
    made = threadline("backup", str(backups), database_url=settings.database_url, tmp_path=tmp_path)
    assert made.returncode == 0, made.stderr
