"""`threadline backup` and `threadline restore` killed with SIGKILL at exact steps, as the
OOM killer, a container stop or a power cut would end them.

tests/stop_at.py runs the real command and stops it (SIGSTOP) as it is about to take a
chosen step (an audit event: a rename, a removal, a process started); the test kills it
there, checks that it really stopped mid-way, then checks what an operator is left with:
no backup that looks complete and is not, retention that keeps the last whole backup,
a half-restored deployment that `serve` refuses and a second restore finishes, and no
data of a forced restore's target lost before the restore is done.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from tests import factories
from tests.conftest import (
    BACKEND,
    DEV_SECRET,
    Clients,
    Server,
    database_environment,
    own_database,
    stop_server,
)
from tests.deployment import SRC, closed_port
from tests.processes import spawn_serve
from tests.test_backups import (
    add_attachment,
    assert_restored,
    flip_one_byte,
    populate,
    settings_for,
)
from threadline.backups import (
    BackupError,
    Manifest,
    _check_backup,
    create_backup,
    database_of,
    restore_backup,
)
from threadline.backups.manifest import MANIFEST, PREFIX, is_backup
from threadline.backups.sqlite import SqliteDatabase
from threadline.config import Settings
from threadline.migrate import upgrade_to_head_async

ROOT = SRC.parent
PG = BACKEND == "postgres"


@pytest.fixture
async def target(tmp_path: Path, settings: Settings) -> AsyncIterator[Settings]:
    """An empty deployment: a database never migrated, no upload folder."""
    async with own_database(tmp_path, "restore") as url:
        yield settings_for(url, tmp_path / "restored-uploads", None)


def environment(deployment: Settings, **extra: str) -> dict[str, str]:
    """The command's environment as an operator's, on ``deployment``."""
    return {
        **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "THREADLINE_ENV"}},
        "PYTHONPATH": f"{SRC}{os.pathsep}{ROOT}",
        **database_environment(deployment.database_url),
        "DEV_AUTH_SECRET": DEV_SECRET,
        "UPLOAD_DIR": str(deployment.upload_dir),
        **extra,
    }


async def start(
    args: list[str], deployment: Settings, cwd: Path, stop_at: str | None = None
) -> asyncio.subprocess.Process:
    """The command in a process group of its own (its stderr in ``cwd/stderr``); with
    ``stop_at``, until it stops there."""
    command = ["-m", "tests.stop_at"] if stop_at else ["-m", "threadline"]
    log = cwd / "stderr"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, *args,
            env=environment(deployment, THREADLINE_STOP_AT=stop_at or "", TMPDIR=str(cwd)),
            cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while stop_at and (state := process_state(process.pid)) != "T":
        if state in ("Z", "gone") or time.monotonic() > deadline:
            await kill(process)
            raise AssertionError(f"never reached {stop_at!r}: {log.read_text()[-2000:]}")
        await asyncio.sleep(0.01)
    return process


def process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


async def kill(process: asyncio.subprocess.Process, *, group: bool = True) -> None:
    """SIGKILL to the command, and with ``group`` to what it started (pg_dump, pg_restore)."""
    if group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        os.kill(process.pid, signal.SIGKILL)
    await process.wait()


async def run(
    args: list[str], deployment: Settings, cwd: Path, module: str = "threadline"
) -> tuple[int, str]:
    """The command (``python -m module``) to its end (at most 60 s): its exit code and what
    it said on stderr besides the INFO lines that alembic logs as it loads."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, env=environment(deployment), cwd=cwd,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        await kill(process)
        raise AssertionError(f"threadline {' '.join(args)} was still running after 60 s") from None
    said = [line for line in stderr.decode().splitlines() if " INFO " not in line]
    return int(process.returncode or 0), "\n".join(said)


def whole_backups(parent: Path) -> list[Path]:
    """The folders that restore and retention take for backups, each checked whole:
    every file of its manifest there, of its size, the database of its checksum."""
    found = sorted(path for path in parent.iterdir() if is_backup(path))
    for folder in found:
        _check_backup(folder, Manifest.read(folder))
    return found


BACKUP_STEPS = {
    # The database being copied: SQLite's copy opened; pg_dump starting in the snapshot.
    "database": "subprocess.Popen --snapshot=" if PG else r"sqlite3.connect \.partial/database\.",
    # An attachment file copied, not yet under its name.
    "files": r"os.rename /uploads/[^']*\.partial'",
    # The manifest written, the folder not yet renamed to its final name.
    "folder": r"os.rename threadline-backup-[^/']*\.partial',",
    # The new backup done; the older one, past --keep, being deleted: one thing of it gone.
    "prune": "os.remove#2 .",
}


@pytest.mark.parametrize("step", list(BACKUP_STEPS))
async def test_a_backup_killed_at_any_step_leaves_no_backup_that_looks_whole_and_is_not(
    step: str, server: Server, settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    await populate(server, settings, clients)
    parent = tmp_path / "backups"
    good, _ = await create_backup(settings, parent)
    args = ["backup", str(parent), "--keep", "1"]
    await kill(await start(args, settings, tmp_path, BACKUP_STEPS[step]))

    partial = [path for path in parent.iterdir() if path.name.endswith(".partial")]
    if step == "prune":  # mid-way: the new backup renamed, the old one partly deleted
        assert [path.name for path in partial] == [f"{good.name}.partial"]
        assert len(list(parent.iterdir())) == 2  # the rest, whole: no other leftover
    else:  # mid-way: the new one unfinished, its manifest written only at the last step
        assert len(partial) == 1 and (partial[0] / MANIFEST).exists() == (step == "folder")
    kept = whole_backups(parent)
    assert kept and (step == "prune" or good in kept)

    # The next run makes a whole backup, and only then prunes the older ones; what the
    # killed one left is gone.
    code, said = await run(args, settings, tmp_path)
    assert code == 0, said
    (newest,) = whole_backups(parent)
    assert newest.name.startswith(PREFIX) and newest != good
    assert list(parent.iterdir()) == [newest]


async def test_a_backup_removes_what_killed_ones_left_never_a_running_ones_folder(
    server: Server, settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """The next backup removes a killed one's ``.partial`` folder, whose lock the kernel
    let go; one that another process, paused mid-copy, is writing keeps its folder while
    a second run prunes, and finishes when it goes on."""
    await populate(server, settings, clients)
    parent = tmp_path / "backups"
    args = ["backup", str(parent), "--keep", "1"]
    paused = await start(args, settings, tmp_path, BACKUP_STEPS["files"])
    try:
        (running,) = parent.iterdir()
        await kill(await start(args, settings, tmp_path, BACKUP_STEPS["files"]))
        (killed,) = set(parent.iterdir()) - {running}
        code, said = await run(args, settings, tmp_path)
        assert code == 0, said
        assert not killed.exists() and process_state(paused.pid) == "T"
        (done,) = whole_backups(parent)
        assert set(parent.iterdir()) == {running, done}
        os.killpg(paused.pid, signal.SIGCONT)
        assert await asyncio.wait_for(paused.wait(), 60) == 0
    finally:
        if paused.returncode is None:
            await kill(paused)
    # It pruned the other run's backup (--keep 1), its own whole under its final name.
    assert whole_backups(parent) == list(parent.iterdir()) == [running.with_suffix("")]


def waits_for_a_lock(pid: int) -> bool:
    """Whether the process is blocked on a flock (/proc/locks marks waiters with ->)."""
    return any(
        line.split()[1:3] == ["->", "FLOCK"] and line.split()[5] == str(pid)
        for line in Path("/proc/locks").read_text().splitlines()
    )


async def test_a_backup_never_removes_a_folder_made_and_not_yet_locked(
    server: Server, settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """Between a backup's mkdir of its folder and its lock on it, its lock on the backups
    folder keeps other runs out: one paused there makes another wait, not remove it."""
    await populate(server, settings, clients)
    parent, logs = tmp_path / "backups", tmp_path / "second"
    logs.mkdir()
    args = ["backup", str(parent)]
    first = await start(args, settings, tmp_path, r"open \('[^']*\.partial', None")
    second = None
    try:
        (made,) = parent.iterdir()
        second = await start(args, settings, logs)
        deadline = time.monotonic() + 60
        while not waits_for_a_lock(second.pid):
            assert second.returncode is None and time.monotonic() < deadline, made.exists()
            await asyncio.sleep(0.01)
        assert made.exists() and process_state(first.pid) == "T"
        os.killpg(first.pid, signal.SIGCONT)
        assert await asyncio.wait_for(first.wait(), 60) == 0
        assert await asyncio.wait_for(second.wait(), 60) == 0
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                await kill(process)
    assert len(whole_backups(parent)) == len(list(parent.iterdir())) == 2


# Where the first of two backups into one folder (--keep 1) is paused while the second runs.
CONCURRENT_STEPS = {
    "before its rename": BACKUP_STEPS["folder"],
    # Its folder renamed to its final name (the backups folder then fsynced), not yet pruning.
    "after its rename": "open#2 /backups', None",
    # Pruning: the older backup about to be renamed to .partial for deletion.
    "in its prune": r"os.rename \('[^']*/threadline-backup-[^/'.]*',",
}


@pytest.mark.parametrize("step", list(CONCURRENT_STEPS))
async def test_two_backups_at_once_never_lose_the_newest_nor_fail(
    step: str, server: Server, settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """Two cron hosts, or cron and a manual run, back up into one folder with --keep 1:
    each prune keeping its own backup and deleting the other's would leave none; two
    pruning at once would rename the same folder, and one fail after its backup was made."""
    await populate(server, settings, clients)
    parent, logs = tmp_path / "backups", tmp_path / "second"
    logs.mkdir()
    old, _ = await create_backup(settings, parent)
    args = ["backup", str(parent), "--keep", "1"]
    first = await start(args, settings, tmp_path, CONCURRENT_STEPS[step])
    second = None
    try:
        (paused,) = set(parent.iterdir()) - {old}
        assert paused.name.endswith(".partial") == (step == "before its rename")
        mine = paused.with_suffix("")
        second = await start(args, settings, logs)
        deadline = time.monotonic() + 60
        # It runs to its end, or waits for the paused one's lock on the backups folder.
        while second.returncode is None and not waits_for_a_lock(second.pid):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        os.killpg(first.pid, signal.SIGCONT)
        assert await asyncio.wait_for(first.wait(), 60) == 0, (tmp_path / "stderr").read_text()
        assert await asyncio.wait_for(second.wait(), 60) == 0, (logs / "stderr").read_text()
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                await kill(process)
    kept = whole_backups(parent)
    assert kept == sorted(parent.iterdir())  # no leftover
    theirs = set(kept) - {old, mine}
    assert len(theirs) == 1, f"the newest backup, the second run's, is gone: {kept}"
    # The first one's is kept by its own prune; the second one's, newer, prunes it if it saw it.
    assert (mine in kept) == (step == "before its rename"), kept


def restore_step(step: str, deployment: Settings) -> str:
    if step == "staging":  # a backup's file being copied into the staging folder
        return r"os.rename /\.restore-[0-9a-f]+/[^']*\.partial'"
    if step == "database" and PG:  # pg_restore starting (a forced one: after the dump aside)
        return "subprocess.Popen --single-transaction"
    if step == "database":  # the restored, migrated scratch copy about to replace the file
        database = database_of(deployment)
        assert isinstance(database, SqliteDatabase)
        return rf"os.rename \.restore-[0-9a-f]+', '{re.escape(str(database.path))}'"
    # The database restored; the first file about to move from staging into place.
    return r"os.rename \('[^']*/\.restore-[0-9a-f]+/[^.']+',"


# The Dockerfile's command, and the ASGI app as a bare uvicorn (or gunicorn's worker) loads it.
SERVE = ("threadline", "serve")
UVICORN = ("uvicorn", "threadline.asgi:app")


async def refused_to_serve(deployment: Settings, cwd: Path, command: Sequence[str] = SERVE) -> str:
    """What serving said as it refused: one line, exit 3 (a worker that cannot start)."""
    module, *args = command
    code, said = await run([*args, "--port", str(closed_port())], deployment, cwd, module)
    assert code == 3 and len(said.splitlines()) == 1 and "Traceback" not in said, (code, said)
    return said


async def test_every_way_of_serving_refuses_a_half_restored_deployment(
    settings: Settings, tmp_path: Path
) -> None:
    """The check is the app's own: uvicorn serving threadline.asgi:app refuses with the same
    line as `threadline serve` while a killed restore's staging folder is left, and serves
    once it is gone."""
    left = settings.upload_dir / ".restore-0123abcd"
    left.mkdir(parents=True)
    # With --workers, uvicorn's supervisor exits 0 when a worker cannot start: serve says first.
    for command in (UVICORN, SERVE, (*SERVE, "--workers", "2")):
        said = await refused_to_serve(settings, tmp_path, command)
        assert said == (
            f"threadline: a restore did not finish ({left} is left): run `threadline restore` again"
        )
    left.rmdir()
    serving = await spawn_serve(closed_port(), environment(settings), UVICORN)
    serving.kill()
    await serving.wait()


@pytest.mark.parametrize("forced", [False, True], ids=["empty", "forced"])
@pytest.mark.parametrize("step", ["staging", "database", "files"])
async def test_a_restore_killed_at_any_step_is_finished_by_restoring_again(
    step: str,
    forced: bool,
    server: Server,
    settings: Settings,
    clients: Clients,
    target: Settings,
    tmp_path: Path,
) -> None:
    alice, thread_id = await populate(server, settings, clients)
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    if forced:  # into the deployment itself, which has a message and a file since
        await factories.send(alice, thread_id, "after the backup")
        newer = await add_attachment(server, settings, alice, thread_id, b"newer", "n.pdf")
        newer_file = settings.upload_dir / thread_id / uuid.UUID(newer).hex
        await stop_server(server)
        target = settings
    before = (await database_of(target).facts()).counts
    args = ["restore", str(folder), *(["--force"] if forced else [])]
    await kill(await start(args, target, tmp_path, restore_step(step, target)))

    # Mid-way: the staging folder is there; the database restored only at the last step.
    assert len(list(target.upload_dir.glob(".restore-*"))) == 1
    counts = (await database_of(target).facts()).counts
    if step == "files":
        assert counts == manifest.counts
        if not forced:  # no file moved into place yet
            assert not any((target.upload_dir / key).exists() for key in manifest.files)
        # Half restored: serve refuses, naming what to do; so does a restore without --force.
        assert "threadline restore" in await refused_to_serve(target, tmp_path)
        code, said = await run(["restore", str(folder)], target, tmp_path)
        assert code == 1 and "--force" in said and len(said.splitlines()) == 1, said
        # One that fails (a damaged file) leaves it marked unfinished all the same.
        damaged = folder / "uploads" / sorted(manifest.files)[-1]
        original = flip_one_byte(damaged)
        with pytest.raises(BackupError, match="does not match its checksum"):
            await restore_backup(target, folder, force=True)
        damaged.write_bytes(original)
        assert len(list(target.upload_dir.glob(".restore-*"))) == 1
    else:  # nothing of the target changed
        assert counts == before
    if forced:  # what the backup does not have is there until the restore is done
        assert newer_file.read_bytes() == b"newer"
        if PG and step == "database":  # the database's, dumped aside: named, and there
            kept = re.search(r"kept in (\S+) until", (tmp_path / "stderr").read_text())
            assert kept and os.stat(kept[1]).st_size > 0

    # The next step: the same restore again (a target still empty needs no --force).
    await restore_backup(target, folder, force=forced or step == "files")
    await assert_restored(target, manifest)
    if isinstance(database := database_of(target), SqliteDatabase):  # no scratch copy left
        assert not list(database.path.parent.glob(f"{database.path.name}.restore-*"))
    if forced:  # files are only ever added or replaced by the backup's
        assert newer_file.read_bytes() == b"newer"
    if step == "files" and not forced:
        port = closed_port()
        serving = await spawn_serve(port, environment(target))
        serving.kill()
        await serving.wait()


@pytest.mark.skipif(not PG, reason="pg_restore is PostgreSQL's")
@pytest.mark.parametrize(
    ("survives", "forced"),
    [(False, False), (True, False), (True, True)],
    ids=["all-killed", "pg_restore-survives", "pg_restore-survives-forced"],
)
async def test_a_restore_killed_while_pg_restore_runs(
    survives: bool,
    forced: bool,
    server: Server,
    settings: Settings,
    clients: Clients,
    target: Settings,
    tmp_path: Path,
) -> None:
    """pg_restore blocked on a lock this test holds, mid-transaction, when the command is
    killed: with it (a power cut, a container stop), or alone (the OOM killer), when
    pg_restore goes on and commits once the lock is released."""
    alice, thread_id = await populate(server, settings, clients)
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    if forced:  # into the deployment itself, which has a message since
        await factories.send(alice, thread_id, "after the backup")
        await stop_server(server)
        target = settings
    else:
        await upgrade_to_head_async(target.direct_database_url)  # migrated, unused: empty
    url = target.direct_database_url.replace("+asyncpg", "", 1)
    holder, watcher = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("LOCK TABLE messages IN ACCESS SHARE MODE")
        args = ["restore", str(folder), *(["--force"] if forced else [])]
        process = await start(args, target, tmp_path)
        waiting = """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
            AND application_name = 'pg_restore' AND ($1 OR wait_event_type = 'Lock')"""
        deadline = time.monotonic() + 60
        while not await watcher.fetchval(waiting, False):
            assert process.returncode is None and time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await kill(process, group=not survives)
        await lock.rollback()
        while await watcher.fetchval(waiting, True):  # pg_restore's session ends
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await holder.close()
        await watcher.close()

    counts = (await database_of(target).facts()).counts
    if survives:  # pg_restore committed alone: the database restored, its files not moved
        assert counts == manifest.counts
        assert len(list(target.upload_dir.glob(".restore-*"))) == 1
        assert "threadline restore" in await refused_to_serve(target, tmp_path)
    else:  # its transaction rolled back: empty as before
        assert not any(counts.values())
    if forced:  # what it replaced is in the dump that its log names
        kept = re.search(r"kept in (\S+) until", (tmp_path / "stderr").read_text())
        assert kept and os.stat(kept[1]).st_size > 0
    again = ["restore", str(folder), *(["--force"] if survives or forced else [])]
    code, said = await run(again, target, tmp_path)
    assert code == 0, said
    await assert_restored(target, manifest)


SYNCED = re.compile(r"f(?:data)?sync\(\d+<([^>]*)>\) = 0")
RENAMED = re.compile(r'rename(?:at2?)?\((?:\S+, )?"([^"]+)", (?:\S+, )?"([^"]+)"')
PARTIAL_FILE = re.compile(r"/(?!threadline-backup-)[^/]*\.partial$")  # not the folder


MADE = re.compile(r'mkdir(?:at)?\((?:\S+, )?"([^"]+)", \S+\) = 0')
# Steps that give something up: a removal, pg_restore (replacing the database) started.
GIVES_UP = re.compile(r'(?:unlink(?:at)?|rmdir)\(.*\) = 0|execve\("[^"]*/pg_restore"')


async def traced(args: list[str], deployment: Settings, cwd: Path, **extra: str) -> list[str]:
    """The command run to its end under strace: its fsyncs, renames, new folders,
    removals and programs started, in order."""
    trace = cwd / "trace"
    calls = (
        "trace=fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat,unlink,unlinkat,rmdir,execve"
    )
    strace = ["strace", "-f", "--seccomp-bpf", "-qq", "-y", "-s", "4096", "-e", calls]
    done = await asyncio.to_thread(
        subprocess.run,
        [*strace, "-o", str(trace), sys.executable, "-m", "threadline", *args],
        env=environment(deployment, **extra), cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return [*trace.read_text().splitlines(), "(the end)"]


def assert_names_on_disk_before_relied_on(lines: list[str], root: Path) -> None:
    """A power cut may keep a later step yet lose a rename or a new folder whose own folder
    was not fsynced: each one under ``root`` (but a new ``.partial`` working folder) must
    have its folder fsynced after it and before the next step that relies on it: one that
    gives something up, a backup folder's rename (to its final name; to ``.partial`` to be
    pruned), the restored SQLite file renamed over the database, the command's end."""
    pending: dict[str, str] = {}  # folder: the first of its names not on disk yet
    for line in lines:
        if found := SYNCED.search(line):
            pending.pop(found[1], None)
            continue
        renamed = RENAMED.search(line)
        relied_on = renamed and (
            Path(renamed[2]).name.startswith(PREFIX) or ".restore-" in Path(renamed[1]).name
        )
        if relied_on or GIVES_UP.search(line) or line == "(the end)":
            assert not pending, f"before {line!r}, not on disk: {pending}"
        made = MADE.search(line)
        new = (
            renamed[2] if renamed else made[1] if made and not made[1].endswith(".partial") else ""
        )
        if new and Path(new).is_relative_to(root):
            pending.setdefault(str(Path(new).parent), line)


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
async def test_a_file_that_backup_or_restore_names_as_done_is_on_disk_first(
    server: Server, settings: Settings, clients: Clients, target: Settings, tmp_path: Path
) -> None:
    """A power cut after a rename keeps the rename but maybe not the data written before
    it: a backup whose manifest names files of zeros, the older ones pruned; attachments
    moved into place empty. Every ``X.partial`` renamed to ``X`` was fsynced first, and
    every name that a later step relies on had its folder fsynced in between."""
    await populate(server, settings, clients)
    parent = tmp_path / "backups"
    await create_backup(settings, parent)
    lines = await traced(["backup", str(parent), "--keep", "1"], settings, tmp_path)
    (folder,) = whole_backups(parent)
    lines += await traced(["restore", str(folder)], target, tmp_path)
    # Forced: PostgreSQL's database dumped aside first, its only copy once pg_restore commits.
    (tmp_path / "tmp").mkdir()
    forced = await traced(
        ["restore", str(folder), "--force"], target, tmp_path, TMPDIR=str(tmp_path / "tmp")
    )
    assert_names_on_disk_before_relied_on([*lines, *forced], tmp_path)
    manifest = Manifest.read(folder)
    synced: set[str] = set()
    published: list[str] = []
    for line in lines:
        if found := SYNCED.search(line):
            synced.add(found[1])
        elif (found := RENAMED.search(line)) and PARTIAL_FILE.search(found[1]):
            assert found[1] in synced, f"{found[1]} renamed before it was on disk"
            published.append(found[2])
            if found[2].endswith(f"/{MANIFEST}"):  # the database file (pg_dump's, SQLite's) too
                assert str(Path(found[2]).with_name(manifest.database_file)) in synced
    assert len(published) == 2 * len(manifest.files) + 1  # backed up, staged; the manifest
