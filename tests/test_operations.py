"""What operators rely on: readiness, production mode, CORS on WebSocket, thread search,
and the seed, migrate, token and users set-role commands."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests import factories
from tests.conftest import (
    BACKEND,
    DEV_SECRET,
    PG_BASE,
    Api,
    Clients,
    Server,
    _pg_admin,
    start_server,
    stop_server,
    token_for,
)
from tests.test_clerk_tokens_http import clerk_token
from tests.wsclient import GraphQLWS
from threadline.app import create_app
from threadline.config import ConfigError, Settings
from threadline.migrate import current_revision_async, head_revision

SRC = Path(__file__).resolve().parent.parent / "src"
THREADS = """
query($s: String, $first: Int, $after: String) {
  threads(search: $s, first: $first, after: $after) {
    edges { node { title } } pageInfo { hasNextPage endCursor } } }
"""


def variant(settings: Settings, **changes: Any) -> Settings:
    """The test's settings with some changed, validated as the environment would be."""
    return Settings(**{**settings.model_dump(), **changes}, _env_file=None)  # type: ignore[call-arg]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def threadline(
    *args: str, database_url: str, tmp_path: Path, **environment: str
) -> subprocess.CompletedProcess[str]:
    """The installed command as an operator runs it, in a folder of its own."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "THREADLINE_ENV"}},
        "PYTHONPATH": str(SRC),
        "DATABASE_URL": database_url,
        "DEV_AUTH_SECRET": DEV_SECRET,
        **environment,
    }
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


# -- readiness


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


# -- production mode


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


# -- CORS


@pytest.fixture
async def cors_server(settings: Settings) -> AsyncIterator[Server]:
    running = await start_server(variant(settings, cors_origins="https://app.example"))
    yield running
    await stop_server(running)


async def ws_origin_answer(server: Server, origin: str | None) -> str:
    """'ack' when the handshake from ``origin`` succeeds and the session starts, else why not."""
    try:
        conn = await websockets.connect(
            server.ws_url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            origin=origin,  # type: ignore[arg-type]
        )
    except websockets.exceptions.InvalidStatus as exc:
        return f"refused {exc.response.status_code}"
    client = GraphQLWS(conn)
    await client.close()
    return "open"


async def test_websockets_from_an_allowed_origin_or_none_open_and_others_are_refused(
    cors_server: Server,
) -> None:
    assert await ws_origin_answer(cors_server, "https://app.example") == "open"
    assert await ws_origin_answer(cors_server, None) == "open"  # native clients send none
    assert await ws_origin_answer(cors_server, "https://evil.example") == "refused 403"
    socket = await GraphQLWS.connect(cors_server.ws_url, token_for("alice"))
    await socket.close()


async def test_http_preflight_allows_the_configured_origin_only(cors_server: Server) -> None:
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    async with httpx.AsyncClient(base_url=cors_server.base) as http:
        allowed = await http.options(
            "/graphql", headers={"origin": "https://app.example", **preflight}
        )
        other = await http.options(
            "/graphql", headers={"origin": "https://evil.example", **preflight}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


# -- threads(search)


async def test_threads_search_matches_titles_of_the_callers_threads_only(clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    for title in ("Launch plan", "lunch", "Q3 LAUNCH review", "100% done", "a_b"):
        await factories.thread(alice, bob, title=title)
    await factories.thread(bob, title="Launch secrets")  # alice is not in it

    async def titles(api: Api, search: str | None) -> set[str]:
        data = await api.gql(THREADS, {"s": search, "first": 50})
        return {e["node"]["title"] for e in data["threads"]["edges"]}

    assert await titles(alice, "launch") == {"Launch plan", "Q3 LAUNCH review"}
    assert await titles(bob, "launch") == {"Launch plan", "Q3 LAUNCH review", "Launch secrets"}
    # LIKE's wildcards are plain characters in a search.
    assert await titles(alice, "100%") == {"100% done"}
    assert await titles(alice, "a_") == {"a_b"}
    assert len(await titles(alice, "  ")) == 5  # blank: no filter
    assert await titles(alice, "nothing like it") == set()


async def test_threads_search_pages_without_overlap(clients: Clients) -> None:
    alice = await clients.user("alice")
    for n in range(5):
        await factories.thread(alice, title=f"Standup {n}")
    await factories.thread(alice, title="Other")
    seen: list[str] = []
    after = None
    while True:
        data = await alice.gql(THREADS, {"s": "standup", "first": 2, "after": after})
        seen += [e["node"]["title"] for e in data["threads"]["edges"]]
        if not data["threads"]["pageInfo"]["hasNextPage"]:
            break
        after = data["threads"]["pageInfo"]["endCursor"]
    assert sorted(seen) == [f"Standup {n}" for n in range(5)]


# -- commands


async def test_seeding_twice_adds_no_duplicate_demo_data(
    settings: Settings, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    for _ in range(2):
        done = threadline("seed", database_url=settings.database_url, tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
    alice = Api(http, token_for("alice"), "alice")
    data = await alice.gql(
        "{ threads(first: 50) { edges { node { title isDirect"
        " messages(first: 50) { edges { node { body } } } } } } }"
    )
    threads = {
        ("direct" if e["node"]["isDirect"] else e["node"]["title"]): [
            m["node"]["body"] for m in e["node"]["messages"]["edges"]
        ]
        for e in data["threads"]["edges"]
    }
    assert len(data["threads"]["edges"]) == 2
    assert len(threads["General"]) == 3 and threads["direct"] == ["Lunch at noon?", "Sure."]
    users = await alice.gql('{ users(search: "", first: 50) { edges { node { username } } } }')
    names = sorted(e["node"]["username"] for e in users["users"]["edges"])
    assert names == ["alice", "bob", "carol"]


@pytest.fixture
async def fresh_database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A database nothing has touched."""
    if BACKEND == "postgres":
        name = f"tl_fresh_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        await _pg_admin(f"CREATE DATABASE {name}")
        yield f"{PG_BASE}/{name}"
        await _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'fresh.db'}"


async def test_migrate_brings_a_fresh_database_to_the_newest_revision_and_can_run_again(
    fresh_database_url: str, tmp_path: Path
) -> None:
    for _ in range(2):
        done = threadline("migrate", database_url=fresh_database_url, tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "newest revision" in done.stdout
    assert await current_revision_async(fresh_database_url) == head_revision()


async def test_users_set_role_makes_an_owner_and_refuses_unknown_users_and_roles(
    settings: Settings, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    url = settings.database_url
    made = threadline("token", "alice", database_url=url, tmp_path=tmp_path)
    assert made.returncode == 0, made.stderr
    done = threadline("users", "set-role", "alice", "owner", database_url=url, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "alice is now OWNER" in done.stdout
    me = await Api(http, made.stdout.strip(), "alice").gql("{ me { role } }")
    assert me["me"]["role"] == "OWNER"

    nobody = threadline("users", "set-role", "nobody", "admin", database_url=url, tmp_path=tmp_path)
    assert nobody.returncode == 1 and "Traceback" not in nobody.stderr
    assert nobody.stderr.startswith("threadline: ")
    bad_role = threadline("users", "set-role", "alice", "king", database_url=url, tmp_path=tmp_path)
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr


def test_a_bad_username_for_a_token_is_a_message_not_a_traceback(
    settings: Settings, tmp_path: Path
) -> None:
    done = threadline("token", "no spaces", database_url=settings.database_url, tmp_path=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "username" in done.stderr


async def test_signed_attachment_urls_live_as_long_as_the_setting_says(settings: Settings) -> None:
    from threadline.models import Attachment

    running = await start_server(variant(settings, attachment_url_seconds=60))
    try:
        row = Attachment(id=uuid.uuid4(), filename="a b.pdf")
        url = running.runtime.signed_attachment_url(row, now=1_000_000.0)
    finally:
        await stop_server(running)
    assert f"/attachments/{row.id}/a%20b.pdf?exp=1000060&sig=" in url
