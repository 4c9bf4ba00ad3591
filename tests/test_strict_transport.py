"""HSTS_SECONDS: Strict-Transport-Security on answers to HTTPS requests only."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import own_database, start_server, stop_server
from tests.deployment import variant
from threadline.config import Settings

pytestmark = pytest.mark.any_backend

# What a TLS-terminating proxy on this host adds (uvicorn trusts it from 127.0.0.1).
OVER_HTTPS = {"x-forwarded-proto": "https"}


async def hsts_headers(settings: Settings) -> list[str | None]:
    """The header on: an HTTPS page, an HTTPS GraphQL POST, an HTTPS 413, a plain-HTTP page."""
    server = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=server.base) as http:
            answers = [
                await http.get("/healthz", headers=OVER_HTTPS),
                await http.post("/graphql", json={"query": "{ __typename }"}, headers=OVER_HTTPS),
                await http.post(
                    "/graphql",
                    content=b"x" * (settings.max_request_bytes + 1),
                    headers={**OVER_HTTPS, "content-type": "application/json"},
                ),
                await http.get("/healthz"),
            ]
    finally:
        await stop_server(server)
    assert [answer.status_code for answer in answers] == [200, 200, 413, 200]
    return [answer.headers.get("strict-transport-security") for answer in answers]


async def test_https_answers_carry_the_header_and_plain_http_answers_do_not(
    settings: Settings,
) -> None:
    headers = await hsts_headers(variant(settings, hsts_seconds=31_536_000))
    assert headers == ["max-age=31536000"] * 3 + [None]


async def test_it_is_off_by_default(settings: Settings) -> None:
    assert await hsts_headers(settings) == [None] * 4


@pytest.mark.expect_server_errors
async def test_an_https_answer_of_an_unhandled_error_carries_the_header_too(
    settings: Settings, tmp_path: Path
) -> None:
    """Rule: every answer to an HTTPS request carries it. Evidence: Starlette's 500 is
    sent by its outermost middleware, outside the app's own, and had no header. A
    download from a database never migrated fails unhandled (/readyz says not ready)."""
    async with own_database(tmp_path, "bare") as url:
        server = await start_server(variant(settings, database_url=url, hsts_seconds=60))
        try:
            signer = server.app.state.runtime.url_signer
            link = signer.url(uuid.uuid4(), "a.pdf", server.base, uuid.uuid4())
            async with httpx.AsyncClient() as http:
                answer = await http.get(link, headers=OVER_HTTPS)
        finally:
            await stop_server(server)
    assert answer.status_code == 500
    assert answer.headers.get("strict-transport-security") == "max-age=60"
