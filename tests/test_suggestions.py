"""In production, errors name no part of the schema the caller did not send: no
"Did you mean ...?" for fields, arguments, types, input fields or enum values, in
validation and in coercing variables, on the JSON-POST fast path, GET and WebSocket.
In development the suggestions stay (they help whoever writes the client).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from tests.conftest import Server, start_server, stop_server, token_for
from tests.wsclient import GraphQLWS
from threadline.config import Environment, Settings

# (operation, variables, the name a suggestion would give away)
QUERIES: list[tuple[str, dict[str, Any], str]] = [
    ("{ mee { id } }", {}, "'me'"),
    ("{ me { usernam } }", {}, "'username'"),
    ("{ threads(frist: 5) { pageInfo { hasNextPage } } }", {}, "'first'"),
    (
        "query($n: Innt) { threads(first: $n) { pageInfo { hasNextPage } } }",
        {"n": 1},
        "'Int'",
    ),
]
MUTATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("mutation { setPresence(status: AWY) { status } }", {}, "AWAY"),
    (
        'mutation { createThread(input: {title: "x", participantIdz: []}) { id } }',
        {},
        "participantIds",
    ),
    # Coercing a variable happens at execution, not validation.
    ("mutation($s: PresenceStatus!) { setPresence(status: $s) { status } }", {"s": "AWY"}, "AWAY"),
    (
        "mutation($i: CreateThreadInput!) { createThread(input: $i) { id } }",
        {"i": {"title": "x", "participantIdz": []}},
        "participantIds",
    ),
]


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(key: rsa.RSAPrivateKey) -> str:
    now = int(time.time())
    claims = {
        "sub": f"user_{uuid.uuid4().hex[:24]}",
        "sid": f"sess_{uuid.uuid4().hex[:24]}",
        "iat": now,
        "nbf": now - 10,
        "exp": now + 60,
        "v": 2,
        "sts": "active",
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "ins_test"})


@pytest.fixture
async def production(settings: Settings, private_key: rsa.RSAPrivateKey) -> AsyncIterator[Server]:
    pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    running = await start_server(
        settings.model_copy(
            update={
                "threadline_env": Environment.PRODUCTION,
                "clerk_jwt_key": SecretStr(pem),
                "dev_auth_secret": None,
            }
        )
    )
    yield running
    await stop_server(running)


def errors_of(body: Any) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = body["errors"] if isinstance(body, dict) else body
    assert errors, body
    # The caller's mistake, said as such: never a masked internal error.
    assert {error["extensions"]["code"] for error in errors} == {"BAD_USER_INPUT"}, errors
    return errors


def messages(body: Any) -> list[str]:
    return [error["message"] for error in errors_of(body)]


def assert_no_suggestion(found: list[str], name: str) -> None:
    for message in found:
        assert "Did you mean" not in message, message
        assert name not in message, message


def assert_nothing_logged_as_a_fault(caplog: pytest.LogCaptureFixture) -> None:
    faults = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not faults, [r.getMessage() for r in faults]


async def answers_over_http(
    base: str, bearer: str, cases: list[tuple[str, dict[str, Any], str]], *, get: bool
) -> list[tuple[list[str], str]]:
    out = []
    headers = {"authorization": f"Bearer {bearer}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for query, variables, name in cases:
            # Twice: the second answer comes from the document cache.
            for _ in range(2):
                response = await http.post(
                    "/graphql", json={"query": query, "variables": variables}, headers=headers
                )
                out.append((messages(response.json()), name))
                if get:
                    params = {"query": query, "variables": json.dumps(variables)}
                    response = await http.get("/graphql", params=params, headers=headers)
                    out.append((messages(response.json()), name))
    return out


async def answers_over_websocket(
    server: Server, bearer: str, cases: list[tuple[str, dict[str, Any], str]]
) -> list[tuple[list[str], str]]:
    out = []
    ws = await GraphQLWS.connect(server.ws_url, bearer)
    try:
        for query, variables, name in cases:
            await ws.subscribe(query, variables)
            message = await ws.next()
            while message["type"] == "complete":  # the end of the previous operation
                message = await ws.next()
            out.append((messages(message["payload"]), name))
    finally:
        await ws.close()
    return out


async def test_production_errors_suggest_no_names_on_any_path(
    production: Server, private_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    bearer = token(private_key)
    answers = await answers_over_http(production.base, bearer, QUERIES, get=True)
    answers += await answers_over_http(production.base, bearer, MUTATIONS, get=False)
    answers += await answers_over_websocket(production, bearer, QUERIES + MUTATIONS)
    assert len(answers) == 2 * 2 * len(QUERIES) + 2 * len(MUTATIONS) + len(QUERIES + MUTATIONS)
    for found, name in answers:
        assert_no_suggestion(found, name)
    assert_nothing_logged_as_a_fault(caplog)


async def test_development_errors_keep_their_suggestions(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    answers = await answers_over_http(server.base, token_for("ann"), QUERIES, get=True)
    answers += await answers_over_http(server.base, token_for("ann"), MUTATIONS, get=False)
    answers += await answers_over_websocket(server, token_for("ann"), QUERIES + MUTATIONS)
    for found, name in answers:
        assert any("Did you mean" in m and name in m for m in found), found
    assert_nothing_logged_as_a_fault(caplog)
