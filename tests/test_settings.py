"""Settings: a bad value stops start-up with the variable's name; the signed URL lifetime."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import start_server, stop_server
from tests.deployment import threadline, variant
from threadline.config import ConfigError, Settings, load_settings
from threadline.models import Attachment


async def test_signed_attachment_urls_live_as_long_as_the_setting_says(settings: Settings) -> None:
    running = await start_server(variant(settings, attachment_url_seconds=60))
    try:
        signer = running.runtime.url_signer
        signer.clock = lambda: 1_000_000.0
        row = Attachment(id=uuid.uuid4(), filename="a b.pdf")
        url = running.runtime.attachment_url(row, "http://example.test", uuid.uuid4())
    finally:
        await stop_server(running)
    # Minted at the start of a 30 s window (half the lifetime), valid 60 s from there.
    assert f"/attachments/{row.id}/a%20b.pdf?exp=1000050&sig=" in url
    assert url.startswith("http://example.test/")


def test_a_bad_limit_in_the_environment_stops_start_up_with_its_name() -> None:
    with pytest.raises(ConfigError, match=r"RATE_LIMIT_UPLOAD: .*N/SECONDS"):
        load_settings(rate_limit_upload="lots per fortnight", _env_file=None)
    with pytest.raises(ConfigError, match="MAX_QUERY_DEPTH"):
        load_settings(max_query_depth=0, _env_file=None)
    assert load_settings(rate_limit_upload=" 5 / 30 ", _env_file=None).rate_limit_upload == "5/30"


def test_a_read_url_needs_postgresql_on_both_sides() -> None:
    with pytest.raises(ConfigError, match="DATABASE_READ_URL needs PostgreSQL"):
        load_settings(database_read_url="postgresql+asyncpg://h/db", _env_file=None)
    with pytest.raises(ConfigError, match="DATABASE_READ_URL needs PostgreSQL"):
        load_settings(
            database_url="postgresql+asyncpg://h/db",
            database_read_url="sqlite+aiosqlite:///x.db",
            _env_file=None,
        )
    assert load_settings(database_read_url=" ", _env_file=None).database_read_url is None


def test_a_redis_cluster_needs_a_node_and_a_prefix_may_not_make_a_hash_tag() -> None:
    with pytest.raises(ConfigError, match="REDIS_CLUSTER=on needs REDIS_URL"):
        load_settings(redis_cluster="on", _env_file=None)
    with pytest.raises(ConfigError, match=r"REDIS_PREFIX: .*braces"):
        load_settings(redis_prefix="{deployment}:", _env_file=None)
    clustered = load_settings(
        redis_url="redis://127.0.0.1:7101/0", redis_cluster="on", redis_prefix="a:", _env_file=None
    )
    assert clustered.redis_cluster is True
    assert clustered.redis_prefix == "a:"


# A pooler's address that is never reached: the commands stop before connecting.
POOLER_URL = "postgresql+asyncpg://threadline@pooler.invalid:6432/threadline"
DIRECT_URL = "postgresql+asyncpg://threadline@postgres.invalid:5432/threadline"


def test_the_pooler_setting_takes_known_poolers_for_postgresql_only() -> None:
    with pytest.raises(ConfigError, match="DATABASE_POOLER"):
        load_settings(database_url=POOLER_URL, database_pooler="odyssey", _env_file=None)
    with pytest.raises(ConfigError, match="DATABASE_URL is SQLite"):
        load_settings(database_pooler="pgbouncer", _env_file=None)
    with pytest.raises(ConfigError, match="DATABASE_DIRECT_URL must be"):
        load_settings(database_url=POOLER_URL, database_direct_url="mysql://x/y", _env_file=None)
    pooled = load_settings(database_url=POOLER_URL, database_pooler=" PgBouncer ", _env_file=None)
    assert pooled.pooled


def test_sessions_of_their_own_go_to_the_direct_url_and_never_through_the_pooler() -> None:
    plain = load_settings(database_url=DIRECT_URL, database_pooler="", _env_file=None)
    assert not plain.pooled and plain.direct_database_url == DIRECT_URL
    pooled = load_settings(
        database_url=POOLER_URL,
        database_pooler="pgbouncer",
        database_direct_url=DIRECT_URL,
        _env_file=None,
    )
    assert pooled.direct_database_url == DIRECT_URL
    without = load_settings(database_url=POOLER_URL, database_pooler="pgbouncer", _env_file=None)
    with pytest.raises(ConfigError, match="need DATABASE_DIRECT_URL"):
        _ = without.direct_database_url


@pytest.mark.parametrize(("command", "code"), [(["migrate"], 2), (["backup", "out"], 1)])
def test_migrate_and_backup_behind_a_pooler_without_a_direct_url_say_so(
    tmp_path: Path, command: list[str], code: int
) -> None:
    done = threadline(
        *command, database_url=POOLER_URL, tmp_path=tmp_path, DATABASE_POOLER="pgbouncer"
    )
    assert done.returncode == code
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("threadline:") and "DATABASE_DIRECT_URL" in last, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("command", "variable"),
    [(["serve"], "DATABASE_READ_URL"), (["migrate"], "DATABASE_DIRECT_URL")],
)
def test_a_replica_or_direct_url_without_the_async_driver_is_a_configuration_error(
    tmp_path: Path, command: list[str], variable: str
) -> None:
    """Rule (config.py: refuse configurations that cannot be right, in one line; their
    messages ask for postgresql+asyncpg://). Evidence: a plain postgresql:// URL, as
    hosting providers print it, passed the check (it starts with "postgresql"); `serve`
    and `migrate` then died with a traceback: "No module named 'psycopg'" (its default driver)."""
    done = threadline(
        *command,
        database_url=DIRECT_URL,
        tmp_path=tmp_path,
        **{variable: "postgresql://threadline:hunter2@postgres.invalid:5432/threadline"},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("threadline: ") and variable in last
