"""/readyz: 200 while the database and Redis answer, 503 naming what is down."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKEND, start_server, stop_server
from tests.deployment import closed_port, variant
from threadline.config import Settings


async def test_readyz_is_200_while_the_database_and_redis_answer(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    if BACKEND == "postgres":
        assert body["redis"] == "ok"


async def test_readyz_is_503_naming_the_database_when_it_is_down(
    settings: Settings, tmp_path: Path
) -> None:
    if BACKEND == "postgres":
        url = f"postgresql+asyncpg://postgres:hunter2@127.0.0.1:{closed_port()}/nowhere"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'missing-folder' / 'threadline.db'}"
    running = await start_server(variant(settings, database_url=url))
    try:
        async with httpx.AsyncClient(base_url=running.base) as http:
            response = await http.get("/readyz")
            alive = await http.get("/healthz")
    finally:
        await stop_server(running)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["database"].startswith("down")
    assert "hunter2" not in response.text
    assert alive.status_code == 200  # liveness is not readiness


@pytest.mark.skipif(BACKEND != "postgres", reason="Redis is configured on the PostgreSQL backend")
async def test_readyz_is_503_naming_redis_when_it_is_down(settings: Settings) -> None:
    running = await start_server(
        variant(settings, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    )
    try:
        async with httpx.AsyncClient(base_url=running.base) as http:
            response = await http.get("/readyz")
    finally:
        await stop_server(running)
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok" and body["redis"].startswith("down")
