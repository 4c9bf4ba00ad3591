"""Settings: a bad value stops start-up with the variable's name; the signed URL lifetime."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import start_server, stop_server
from tests.deployment import variant
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
