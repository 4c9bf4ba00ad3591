"""Clerk mode end to end: RS256 session tokens over HTTP and WebSocket, nothing else.

The server runs with CLERK_JWT_KEY (a PEM public key, no network) and one
authorized party; every token is signed here with the matching private key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from tests.conftest import DEV_SECRET, Api, Server, start_server, stop_server
from threadline.auth.tokens import mint_dev_token
from threadline.config import Settings

PARTY = "https://app.example"
ME = "{ me { id clerkId username displayName imageUrl role } }"


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def public_pem(private_key: rsa.RSAPrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
async def clerk_server(settings: Settings, public_pem: str) -> AsyncIterator[Server]:
    clerk_settings = settings.model_copy(
        update={
            "clerk_jwt_key": SecretStr(public_pem),
            "dev_auth_secret": None,
            "clerk_authorized_parties": [PARTY],
        }
    )
    assert clerk_settings.clerk_enabled
    running = await start_server(clerk_settings)
    yield running
    await stop_server(running)


@pytest.fixture
async def http(clerk_server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=clerk_server.base, timeout=30) as client:
        yield client


def clerk_token(key: rsa.RSAPrivateKey, sub: str | None = None, **overrides: Any) -> str:
    """A Clerk session token (v2 claims); ``None`` in overrides drops a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub or f"user_{uuid.uuid4().hex[:24]}",
        "sid": f"sess_{uuid.uuid4().hex[:24]}",
        "azp": PARTY,
        "iss": "https://clerk.app.example",
        "iat": now,
        "nbf": now - 10,
        "exp": now + 60,
        "v": 2,
        "sts": "active",
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "ins_test"})


def api(http: httpx.AsyncClient, token: str) -> Api:
    return Api(http, token)


async def assert_refused(http: httpx.AsyncClient, token: str) -> None:
    assert await api(http, token).error(ME) == "UNAUTHENTICATED"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---------------------------------------------------------------- accepted


async def test_a_valid_clerk_token_creates_the_user_just_in_time_and_me_works(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    token = clerk_token(
        private_key,
        "user_2abcJIT",
        name="Grace Hopper",
        username="grace",
        image_url="https://img.clerk.com/grace.png",
    )
    me = (await api(http, token).gql(ME))["me"]
    assert me["clerkId"] == "user_2abcJIT"
    assert me["displayName"] == "Grace Hopper"
    assert me["username"] == "grace"
    assert me["imageUrl"] == "https://img.clerk.com/grace.png"
    assert me["role"] == "MEMBER"
    # The next token of the same user is the same user, not a second one.
    again = (await api(http, clerk_token(private_key, "user_2abcJIT")).gql(ME))["me"]
    assert again["id"] == me["id"]


async def test_a_token_without_profile_claims_gets_a_neutral_placeholder_name(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    # Clerk's default token has no name; an e-mail claim added by a template is not one.
    token = clerk_token(private_key, "user_2abcBare", email="hidden.person@example.com")
    me = (await api(http, token).gql(ME))["me"]
    assert me["clerkId"] == "user_2abcBare"
    assert me["displayName"].strip()
    assert "@" not in me["displayName"] and "hidden" not in me["displayName"]
    assert "user_2abcBare" not in me["displayName"]
    assert me["username"] is None


async def test_a_token_expired_within_the_five_second_leeway_is_accepted(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    token = clerk_token(private_key, iat=now - 62, nbf=now - 62, exp=now - 2)
    assert (await api(http, token).gql(ME))["me"]["id"]


# ---------------------------------------------------------------- refused


async def test_a_token_for_another_authorized_party_is_unauthenticated(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    await assert_refused(http, clerk_token(private_key, azp="https://evil.example"))


async def test_a_token_whose_authorized_party_is_a_list_is_unauthenticated(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    # Validly signed: only the claim's shape is wrong, and that is no server error.
    await assert_refused(http, clerk_token(private_key, azp=[PARTY]))
    await assert_refused(http, clerk_token(private_key, azp={"party": PARTY}))


def signed_raw_token(key: rsa.RSAPrivateKey, payload: bytes) -> str:
    """An RS256 token over payload bytes that no JSON encoder would write."""
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "ins_test"}).encode())
    signing_input = f"{header}.{b64url(payload)}".encode()
    algorithm = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
    return f"{signing_input.decode()}.{b64url(algorithm.sign(signing_input, key))}"


async def test_a_validly_signed_token_nested_past_the_parser_is_unauthenticated(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    deep = b'{"sub":"user_deep","azp":"' + PARTY.encode() + b'","exp":' + str(now + 60).encode()
    # 20,000 levels: far past any JSON parser's depth limit (about 1,000), and the token
    # still fits in the 64 KiB request head (larger heads are answered 431 unread).
    deep += b',"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    await assert_refused(http, signed_raw_token(private_key, deep))


async def test_claims_with_nul_and_lone_surrogates_are_cleaned_not_stored_raw(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    token = clerk_token(private_key, name="Gra\x00ce \ud800Hopper", username="gr\x00ace\udfff")
    me = (await api(http, token).gql(ME))["me"]
    assert (me["displayName"], me["username"]) == ("Grace Hopper", "grace")


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "user_\x00x"},
        {"sub": "user_\ud800x"},
        {"sub": "user_2abc\nx"},
        {"sub": "user_" + "u" * 300},
        {"sub": "u" * 40_000},  # under the 64 KiB request-head limit
        {"sid": "sess_" + "s" * 300},
        {"sid": "sess_\x00x"},
    ],
    ids=["nul-sub", "surrogate-sub", "newline-sub", "long-sub", "huge-sub", "long-sid", "nul-sid"],
)
async def test_a_signed_token_whose_ids_are_not_clerk_ids_is_unauthenticated(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey, claims: dict[str, str]
) -> None:
    token = clerk_token(private_key, **claims)
    await assert_refused(http, token)
    # Nothing was stored for it: the only user is the one a good token makes.
    viewer = api(http, clerk_token(private_key, "user_2abcViewer"))
    found = await viewer.gql("{ users { edges { node { clerkId } } } }")
    assert [e["node"]["clerkId"] for e in found["users"]["edges"]] == ["user_2abcViewer"]


async def test_a_token_without_an_authorized_party_is_unauthenticated(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    await assert_refused(http, clerk_token(private_key, azp=None))


async def test_a_development_hs256_token_is_unauthenticated_in_clerk_mode(
    http: httpx.AsyncClient,
) -> None:
    await assert_refused(http, mint_dev_token(DEV_SECRET, "dev_alice", "alice"))


async def test_an_hs256_token_keyed_with_the_public_key_is_unauthenticated(
    http: httpx.AsyncClient, public_pem: str
) -> None:
    # The classic algorithm confusion: the public key used as an HMAC secret.
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": "user_forged", "azp": PARTY, "iat": now, "exp": now + 60}
    payload = b64url(json.dumps(claims).encode())
    mac = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    await assert_refused(http, f"{header}.{payload}.{b64url(mac)}")


async def test_a_token_signed_by_another_key_is_unauthenticated(
    http: httpx.AsyncClient,
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await assert_refused(http, clerk_token(stranger))


async def test_an_expired_clerk_token_is_unauthenticated(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    await assert_refused(http, clerk_token(private_key, iat=now - 120, nbf=now - 120, exp=now - 30))


async def test_a_token_of_a_pending_session_is_unauthenticated(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    await assert_refused(http, clerk_token(private_key, sts="pending"))


async def test_refused_tokens_create_no_user(
    http: httpx.AsyncClient, private_key: rsa.RSAPrivateKey
) -> None:
    sub = "user_2abcNever"
    for token in (
        clerk_token(private_key, sub, azp="https://evil.example"),
        clerk_token(private_key, sub, sts="pending"),
        clerk_token(private_key, sub, exp=int(time.time()) - 30),
    ):
        await assert_refused(http, token)
    viewer = api(http, clerk_token(private_key, "user_2abcViewer"))
    found = await viewer.gql("{ users { edges { node { clerkId } } } }")
    assert [e["node"]["clerkId"] for e in found["users"]["edges"]] == ["user_2abcViewer"]


# ---------------------------------------------------------------- WebSocket


async def ws_init(
    server: Server, payload: dict[str, Any]
) -> tuple[dict[str, Any] | None, int | None]:
    """The server's answer to connection_init: its first message, or the close code."""
    async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        except websockets.ConnectionClosed:
            return None, ws.close_code
        return message, None


async def test_a_websocket_with_a_good_clerk_token_gets_connection_ack(
    clerk_server: Server, private_key: rsa.RSAPrivateKey
) -> None:
    token = clerk_token(private_key, name="Grace Hopper")
    message, code = await ws_init(clerk_server, {"authorization": f"Bearer {token}"})
    assert code is None
    assert message is not None and message["type"] == "connection_ack"


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "development",
        "wrong party",
        "party list",
        "expired",
        "pending",
        "missing",
        "nul subject",
        "long subject",
        "long session",
    ],
)
async def test_a_websocket_with_a_bad_token_is_closed_with_4403(
    clerk_server: Server, private_key: rsa.RSAPrivateKey, kind: str
) -> None:
    tokens = {
        "garbage": "not-a-jwt",
        "development": mint_dev_token(DEV_SECRET, "dev_alice", "alice"),
        "wrong party": clerk_token(private_key, azp="https://evil.example"),
        "party list": clerk_token(private_key, azp=[PARTY]),
        "expired": clerk_token(private_key, exp=int(time.time()) - 30),
        "pending": clerk_token(private_key, sts="pending"),
        "nul subject": clerk_token(private_key, "user_\x00x"),
        "long subject": clerk_token(private_key, "user_" + "u" * 300),
        "long session": clerk_token(private_key, sid="sess_" + "s" * 300),
    }
    payload = {"authorization": f"Bearer {tokens[kind]}"} if kind in tokens else {}
    message, code = await ws_init(clerk_server, payload)
    assert message is None
    assert code == 4403
