"""Production mode: Clerk only, no GraphiQL or introspection, internal errors masked
with an id that the log line with the traceback carries."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import DEV_SECRET, Server, start_server, stop_server
from tests.deployment import threadline, variant
from tests.test_clerk_tokens_http import clerk_token
from threadline.app import create_app
from threadline.config import ConfigError, Settings


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def production(settings: Settings, private_key: rsa.RSAPrivateKey) -> AsyncIterator[Server]:
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    running = await start_server(
        variant(
            settings,
            threadline_env="production",
            dev_auth_secret=None,
            clerk_jwt_key=SecretStr(pem.decode()),
        )
    )
    yield running
    await stop_server(running)


def test_production_refuses_to_start_with_development_auth(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="refuses development auth"):
        create_app(variant(settings, threadline_env="production"))


def test_the_serve_command_refuses_production_with_development_auth(
    settings: Settings, tmp_path: Path
) -> None:
    done = threadline(
        "serve", database_url=settings.database_url, tmp_path=tmp_path, THREADLINE_ENV="production"
    )
    assert done.returncode == 2
    assert "refuses development auth" in done.stderr
    assert "Traceback" not in done.stderr and DEV_SECRET not in done.stderr


async def test_production_serves_no_graphiql_and_refuses_introspection(
    production: Server, server: Server, private_key: rsa.RSAPrivateKey
) -> None:
    browser = {"accept": "text/html"}
    introspection = {"query": "{ __schema { queryType { name } } }"}
    headers = {"authorization": f"Bearer {clerk_token(private_key, azp=None)}"}
    async with httpx.AsyncClient(base_url=production.base) as http:
        page = await http.get("/graphql", headers=browser)
        refused = (await http.post("/graphql", json=introspection, headers=headers)).json()
    async with httpx.AsyncClient(base_url=server.base) as http:
        development = await http.get("/graphql", headers=browser)
    assert development.status_code == 200 and "graphiql" in development.text.lower()
    assert "graphiql" not in page.text.lower()
    assert page.status_code in (400, 404, 405)
    assert "introspection" in refused["errors"][0]["message"].lower()


@pytest.mark.expect_server_errors
async def test_production_masks_an_unexpected_error_with_an_id_that_the_log_carries(
    production: Server,
    settings: Settings,
    private_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = {"authorization": f"Bearer {clerk_token(private_key, azp=None)}"}
    query = {"query": "{ notifications { edges { node { id } } } }"}
    async with httpx.AsyncClient(base_url=production.base) as http:
        assert "errors" not in (await http.post("/graphql", json=query, headers=headers)).json()
        # A real fault: the table is gone from under the running server.
        engine = create_async_engine(settings.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("ALTER TABLE notifications RENAME TO notifications_away"))
            try:
                body = (await http.post("/graphql", json=query, headers=headers)).json()
            finally:
                async with engine.begin() as conn:
                    await conn.execute(
                        text("ALTER TABLE notifications_away RENAME TO notifications")
                    )
        finally:
            await engine.dispose()
    error = body["errors"][0]
    error_id = error["extensions"]["errorId"]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["message"] == f"Internal server error ({error_id})"
    assert len(error_id) == 12
    assert "table" not in error["message"] and "sql" not in str(body).lower()
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR and logged[0].exc_info
