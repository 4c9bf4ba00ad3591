"""The packaged migrations build exactly the models' schema plus full-text search.

Each test starts from an empty database (a temporary SQLite file, or a fresh
PostgreSQL database ``tl_mig_*`` dropped afterwards) and migrates it through
``threadline.migrate``, the way the application and the CLI do.
"""

from __future__ import annotations

import ast
import asyncio
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, insert, inspect, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tests.uploads import oriented
from threadline.migrate import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revision_async,
    head_revision,
    include_name,
    include_object,
    upgrade_to_head,
    upgrade_to_head_async,
)
from threadline.models import Attachment, Base, Message, Thread

# Parametrized over both dialects itself: the SQLite row of the test command skips it.
pytestmark = pytest.mark.any_backend

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


@asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one test, dropped when it ends."""
    name = f"tl_mig_{secrets.token_hex(6)}"
    admin = create_async_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OSError as error:
        await admin.dispose()
        pytest.skip(f"PostgreSQL is unreachable at {POSTGRES_ADMIN_URL}: {error}")
    try:
        base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
        yield f"{base}/{name}"
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres_only)])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
    else:
        async with fresh_postgres_database() as url:
            yield url


@asynccontextmanager
async def engine_for(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()


def _compare_with_models(connection: Connection) -> list[Any]:
    # The options env.py gives autogenerate, so "no difference" here means
    # `alembic revision --autogenerate` would find nothing to write.
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_name": include_name,
            "include_object": include_object,
        },
    )
    return list(compare_metadata(context, Base.metadata))


async def schema_differences(url: str) -> list[Any]:
    async with engine_for(url) as engine, engine.connect() as connection:
        return await connection.run_sync(_compare_with_models)


async def table_names(url: str) -> set[str]:
    async with engine_for(url) as engine, engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names)


async def downgrade_to_base(url: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(url), "base")


async def add_message(engine: AsyncEngine, body: str) -> uuid.UUID:
    thread_id, message_id = uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(insert(Thread).values(id=thread_id, title="Plans"))
        await connection.execute(
            insert(Message).values(id=message_id, thread_id=thread_id, seq=1, body=body)
        )
    return message_id


# --- the schema is the models' schema ---


async def test_upgrade_to_head_builds_exactly_the_schema_of_the_models(
    empty_database_url: str,
) -> None:
    assert await current_revision_async(empty_database_url) is None

    await upgrade_to_head_async(empty_database_url)

    assert await current_revision_async(empty_database_url) == head_revision()
    assert await schema_differences(empty_database_url) == []


async def test_downgrade_to_base_removes_everything_and_upgrade_rebuilds_it(
    empty_database_url: str,
) -> None:
    await upgrade_to_head_async(empty_database_url)

    await downgrade_to_base(empty_database_url)

    assert await table_names(empty_database_url) == {"alembic_version"}
    assert await current_revision_async(empty_database_url) is None

    await upgrade_to_head_async(empty_database_url)

    assert await current_revision_async(empty_database_url) == head_revision()
    assert await schema_differences(empty_database_url) == []


async def test_upgrade_to_head_twice_changes_nothing(empty_database_url: str) -> None:
    await upgrade_to_head_async(empty_database_url)
    await upgrade_to_head_async(empty_database_url)

    assert await current_revision_async(empty_database_url) == head_revision()
    assert await schema_differences(empty_database_url) == []


async def test_schema_comparison_notices_a_missing_index(sqlite_url: str) -> None:
    # Guards the tests above against passing because the comparison sees nothing.
    await upgrade_to_head_async(sqlite_url)
    async with engine_for(sqlite_url) as engine, engine.begin() as connection:
        await connection.execute(text("DROP INDEX ix_users_username"))

    differences = await schema_differences(sqlite_url)

    assert [(kind, index.name) for kind, index in differences] == [
        ("add_index", "ix_users_username")
    ]


def test_no_revision_imports_the_application() -> None:
    # A revision must do on a new deployment what it did on the old ones: application
    # code it imported may have changed since (relative imports count as ours).
    found = []
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." * node.level + (node.module or "")]
            else:
                continue
            ours = [n for n in names if n.startswith(".") or n.split(".")[0] == "threadline"]
            found += [f"{path.name}:{node.lineno}: {name}" for name in ours]
    assert found == []


# --- calling the migrations with and without an event loop ---


def test_upgrade_to_head_runs_where_no_event_loop_runs(sqlite_url: str) -> None:
    upgrade_to_head(sqlite_url)

    assert asyncio.run(current_revision_async(sqlite_url)) == head_revision()


async def test_upgrade_to_head_inside_a_running_loop_points_to_the_async_variant(
    sqlite_url: str,
) -> None:
    with pytest.raises(RuntimeError, match="upgrade_to_head_async"):
        upgrade_to_head(sqlite_url)

    assert await current_revision_async(sqlite_url) is None


# --- full-text search, outside the models ---


@pytest.mark.postgres_only
async def test_postgres_messages_have_a_generated_english_search_vector_with_a_gin_index(
    postgres_url: str,
) -> None:
    await upgrade_to_head_async(postgres_url)

    async with engine_for(postgres_url) as engine:
        async with engine.connect() as connection:
            column = (
                await connection.execute(
                    text(
                        "SELECT data_type, is_generated, generation_expression"
                        " FROM information_schema.columns"
                        " WHERE table_name = 'messages' AND column_name = 'search_vector'"
                    )
                )
            ).one()
            index_definition = (
                await connection.execute(
                    text(
                        "SELECT indexdef FROM pg_indexes"
                        " WHERE indexname = 'ix_messages_search_vector'"
                    )
                )
            ).scalar_one()
        assert column.data_type == "tsvector"
        assert column.is_generated == "ALWAYS"
        assert "'english'" in column.generation_expression
        assert "USING gin (search_vector)" in index_definition

        message_id = await add_message(engine, "Running late, start without me")
        async with engine.connect() as connection:
            found = (
                await connection.execute(
                    text(
                        "SELECT id FROM messages"
                        " WHERE search_vector @@ websearch_to_tsquery('english', :q)"
                    ),
                    {"q": "run"},
                )
            ).scalars()
            assert list(found) == [message_id]


async def sqlite_search(engine: AsyncEngine, query: str) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT messages.body FROM messages_fts"
                " JOIN messages ON messages.rowid = messages_fts.rowid"
                " WHERE messages_fts MATCH :q ORDER BY rank"
            ),
            {"q": query},
        )
        return list(rows.scalars())


async def test_sqlite_messages_fts_follows_inserts_edits_and_deletes(sqlite_url: str) -> None:
    await upgrade_to_head_async(sqlite_url)
    assert "messages_fts" in await table_names(sqlite_url)

    async with engine_for(sqlite_url) as engine:
        message_id = await add_message(engine, "Running late, start without me")
        # The porter stemmer, like PostgreSQL's english configuration.
        assert await sqlite_search(engine, "run") == ["Running late, start without me"]

        async with engine.begin() as connection:
            await connection.execute(
                update(Message).where(Message.id == message_id).values(body="Lunch at noon")
            )
        assert await sqlite_search(engine, "run") == []
        assert await sqlite_search(engine, "lunch") == ["Lunch at noon"]

        async with engine.begin() as connection:
            await connection.execute(delete(Message).where(Message.id == message_id))
        assert await sqlite_search(engine, "lunch") == []

        async with engine.begin() as connection:
            # Raises if the index disagrees with the messages table it indexes.
            await connection.execute(
                text("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
            )


# --- several migrators at once ---


async def test_concurrent_upgrades_in_one_process_take_turns(empty_database_url: str) -> None:
    await asyncio.gather(*(upgrade_to_head_async(empty_database_url) for _ in range(3)))

    assert await current_revision_async(empty_database_url) == head_revision()
    assert await schema_differences(empty_database_url) == []


async def test_concurrent_upgrades_from_separate_processes_take_turns(
    empty_database_url: str,
) -> None:
    # Several app processes may start at once, each migrating before it serves.
    script = (
        "import sys; from threadline.migrate import upgrade_to_head; upgrade_to_head(sys.argv[1])"
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, empty_database_url, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    results = [await process.communicate() for process in processes]

    failures = [
        stderr.decode()
        for process, (_, stderr) in zip(processes, results, strict=True)
        if process.returncode
    ]
    assert failures == []
    assert await current_revision_async(empty_database_url) == head_revision()
    assert await schema_differences(empty_database_url) == []


# --- data migrations ---


async def test_images_stored_with_their_unturned_size_get_the_size_as_shown_once(
    empty_database_url: str, tmp_path: Path
) -> None:
    """0003: a quarter-turned photo (EXIF orientation 6) stored before ac4ecf7 kept its
    pixels' 600 x 300; it is shown 300 x 600. A row stored since, an upright image and a
    row whose file is gone keep theirs, and a second run swaps nothing back."""
    url, uploads = empty_database_url, tmp_path / "uploads"
    await upgrade_to_head_async(url)
    files = {"aa/old": oriented("JPEG", (600, 300), 6), "bb/new": oriented("JPEG", (600, 300), 6)}
    files["cc/upright"] = oriented("JPEG", (600, 300), 1)
    for key, data in files.items():
        (uploads / key).parent.mkdir(parents=True)
        (uploads / key).write_bytes(data)
    rows = {"aa/old": (600, 300), "bb/new": (300, 600), "cc/upright": (600, 300)}
    rows["dd/missing"] = (600, 300)
    async with engine_for(url) as engine, engine.begin() as connection:
        thread_id = uuid.uuid4()
        await connection.execute(insert(Thread).values(id=thread_id, title="Photos"))
        for key, (width, height) in rows.items():
            await connection.execute(
                insert(Attachment).values(
                    thread_id=thread_id,
                    filename="p",
                    content_type="image/jpeg",
                    size=1,
                    kind="IMAGE",
                    width=width,
                    height=height,
                    storage_key=key,
                )
            )
    shown = {**rows, "aa/old": (300, 600)}
    for _ in range(2):
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0002")
        await upgrade_to_head_async(url, uploads)
        async with engine_for(url) as engine, engine.connect() as connection:
            stored = await connection.execute(
                select(Attachment.storage_key, Attachment.width, Attachment.height)
            )
            assert {key: (width, height) for key, width, height in stored} == shown


async def test_image_sizes_wait_for_an_upload_folder_that_is_not_there(
    empty_database_url: str, tmp_path: Path
) -> None:
    """0003 given an upload folder that does not exist (migrate run without the volume,
    a relative UPLOAD_DIR from another folder) refuses: done without the files, it would
    never run again. Run with the folder, it turns the old row."""
    url, uploads = empty_database_url, tmp_path / "uploads"
    await upgrade_to_head_async(url)
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0002")
    (uploads / "aa").mkdir(parents=True)
    (uploads / "aa/old").write_bytes(oriented("JPEG", (600, 300), 6))
    async with engine_for(url) as engine, engine.begin() as connection:
        thread_id = uuid.uuid4()
        await connection.execute(insert(Thread).values(id=thread_id, title="Photos"))
        old = {"filename": "p", "content_type": "image/jpeg", "size": 1, "kind": "IMAGE"}
        await connection.execute(
            insert(Attachment).values(
                thread_id=thread_id, width=600, height=300, storage_key="aa/old", **old
            )
        )
    with pytest.raises(FileNotFoundError, match="revision 0003 reads"):
        await upgrade_to_head_async(url, tmp_path / "not-mounted")
    assert await current_revision_async(url) == "0002"
    await upgrade_to_head_async(url, uploads)
    async with engine_for(url) as engine, engine.connect() as connection:
        stored = await connection.execute(select(Attachment.width, Attachment.height))
        assert stored.one() == (300, 600)
