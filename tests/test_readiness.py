"""/readyz: 200 while the database and Redis answer, 503 naming what is down (only
"down": anyone may ask; the detail goes to the server log)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKEND, ON_POSTGRES, start_server, stop_server
from tests.deployment import closed_port, variant
from threadline.config import Settings


async def answers(settings: Settings, *paths: str) -> list[httpx.Response]:
    """What a server of these settings, started and stopped here, answers at each path."""
    running = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=running.base) as http:
            return [await http.get(path) for path in paths]
    finally:
        await stop_server(running)


async def test_readyz_is_200_while_the_database_and_redis_answer(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    if BACKEND == "postgres":
        assert body["redis"] == "ok"


async def test_readyz_is_503_naming_the_database_when_it_is_down(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="threadline.app")
    port = closed_port()
    if ON_POSTGRES:
        url = f"postgresql+asyncpg://postgres:hunter2@127.0.0.1:{port}/nowhere"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'missing-folder' / 'threadline.db'}"
    response, alive = await answers(variant(settings, database_url=url), "/readyz", "/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body == {"status": "unavailable", "database": "down"} | (
        {"redis": "ok"} if ON_POSTGRES else {}
    )
    assert alive.status_code == 200  # liveness is not readiness
    # The operator finds the cause in the log, with no password in it.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "threadline.app")
    assert "readiness: the database is down: " in logged
    assert "hunter2" not in logged


@pytest.mark.skipif(BACKEND != "postgres", reason="Redis is configured on the PostgreSQL backend")
async def test_readyz_is_503_naming_redis_when_it_is_down(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="threadline.app")
    port = closed_port()
    [response] = await answers(
        variant(settings, redis_url=f"redis://:hunter2@127.0.0.1:{port}/0"), "/readyz"
    )
    assert response.status_code == 503
    body = response.json()
    assert body == {"status": "unavailable", "database": "ok", "redis": "down"}
    # No host, port or driver message for whoever asks; the log has them, no password.
    assert str(port) not in response.text and "127.0.0.1" not in response.text
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "threadline.app")
    assert "readiness: Redis is down: " in logged
    assert "hunter2" not in logged
