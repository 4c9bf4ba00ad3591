"""Clerk session tokens and development tokens: what is accepted, what is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from threadline.auth.tokens import TokenVerifier, mint_dev_token
from threadline.config import ConfigError, Settings
from threadline.errors import Unauthenticated
from threadline.services.clerk_sync import Identity

DEV_SECRET = "development-secret-for-tests-" + "x" * 40
START = 1_750_000_000.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    entry: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    entry.update(kid=kid, use="sig", alg="RS256")
    return entry


def clerk_claims(now: float = START, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "user_2abc",
        "sid": "sess_2abc",
        "iss": "https://clerk.example.com",
        "azp": "https://app.example.com",
        "iat": int(now),
        "nbf": int(now) - 10,
        "exp": int(now) + 60,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def sign(key: rsa.RSAPrivateKey, claims: dict[str, Any], kid: str | None = "key-a") -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def pem_verifier(key: rsa.RSAPrivateKey, clock: Clock, **overrides: Any) -> TokenVerifier:
    settings = make_settings(clerk_jwt_key=public_pem(key), **overrides)
    return TokenVerifier(settings, clock=clock)


async def refused(verifier: TokenVerifier, token: str, reason: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated, match=reason) as caught:
        await verifier.verify(token)
    assert token not in str(caught.value)
    return caught.value


# ---------------------------------------------------------------- PEM (no network)


async def test_valid_rs256_token_verified_with_pem_gives_identity(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = pem_verifier(rsa_key, Clock())
    token = sign(
        rsa_key,
        clerk_claims(username="ada", name="Ada Lovelace", image_url="https://img.example/a.png"),
    )

    identity = await verifier.verify(token)

    assert identity == Identity(
        clerk_id="user_2abc",
        session_id="sess_2abc",
        expires_at=datetime.fromtimestamp(int(START) + 60, UTC),
        username="ada",
        name="Ada Lovelace",
        image_url="https://img.example/a.png",
    )


async def test_pem_pasted_with_literal_backslash_n_sequences_works(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    one_line = public_pem(rsa_key).strip().replace("\n", "\\n")
    assert "\n" not in one_line
    verifier = TokenVerifier(make_settings(clerk_jwt_key=one_line), clock=Clock())

    identity = await verifier.verify(sign(rsa_key, clerk_claims()))

    assert identity.clerk_id == "user_2abc"
    assert identity.username is None


def test_a_pem_that_is_not_a_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="CLERK_JWT_KEY"):
        TokenVerifier(make_settings(clerk_jwt_key="not a key"), clock=Clock())


async def test_token_signed_by_another_key_is_refused(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = pem_verifier(rsa_key, Clock())
    await refused(verifier, sign(other_rsa_key, clerk_claims()), "signature is invalid")


async def test_tampered_payload_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = pem_verifier(rsa_key, Clock())
    header, _, signature = sign(rsa_key, clerk_claims()).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(clerk_claims(sub="user_evil")).encode())
    token = f"{header}.{forged.decode().rstrip('=')}.{signature}"
    await refused(verifier, token, "signature is invalid")


async def test_garbage_and_empty_tokens_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = pem_verifier(rsa_key, Clock())
    await refused(verifier, "not-a-jwt", "malformed")
    await refused(verifier, "a.b.c", "malformed")
    with pytest.raises(Unauthenticated, match="no token"):
        await verifier.verify("")


# ---------------------------------------------------------------- time claims


async def test_expired_token_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    clock = Clock()
    verifier = pem_verifier(rsa_key, clock)
    token = sign(rsa_key, clerk_claims())
    clock.advance(60 + 5)
    await refused(verifier, token, "expired")


async def test_token_expired_within_the_five_second_leeway_is_accepted(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    clock = Clock()
    verifier = pem_verifier(rsa_key, clock)
    token = sign(rsa_key, clerk_claims())
    clock.advance(60 + 4)
    assert (await verifier.verify(token)).clerk_id == "user_2abc"


async def test_token_not_valid_yet_is_refused_beyond_the_leeway(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = pem_verifier(rsa_key, Clock())
    early = sign(rsa_key, clerk_claims(nbf=int(START) + 10, exp=int(START) + 70))
    await refused(verifier, early, "not valid yet")
    slightly_early = sign(rsa_key, clerk_claims(nbf=int(START) + 4))
    assert (await verifier.verify(slightly_early)).clerk_id == "user_2abc"


async def test_token_without_exp_or_sub_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = pem_verifier(rsa_key, Clock())
    await refused(verifier, sign(rsa_key, clerk_claims(exp=None)), "no exp")
    await refused(verifier, sign(rsa_key, clerk_claims(sub=None)), "no subject")


# ---------------------------------------------------------------- issuer, party, status


async def test_token_from_another_issuer_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = pem_verifier(rsa_key, Clock(), clerk_issuer="https://clerk.example.com")
    assert await verifier.verify(sign(rsa_key, clerk_claims()))
    token = sign(rsa_key, clerk_claims(iss="https://clerk.attacker.example"))
    await refused(verifier, token, "another issuer")


async def test_token_for_another_authorized_party_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = pem_verifier(
        rsa_key,
        Clock(),
        clerk_authorized_parties="https://app.example.com, https://admin.example.com",
    )
    assert await verifier.verify(sign(rsa_key, clerk_claims(azp="https://admin.example.com")))
    token = sign(rsa_key, clerk_claims(azp="https://evil.example.com"))
    await refused(verifier, token, "another authorized party")


async def test_token_without_azp_is_refused_when_parties_are_set(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = pem_verifier(rsa_key, Clock(), clerk_authorized_parties="https://app.example.com")
    await refused(verifier, sign(rsa_key, clerk_claims(azp=None)), "no authorized party")


async def test_token_without_azp_is_accepted_when_no_parties_are_set(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = pem_verifier(rsa_key, Clock())
    assert await verifier.verify(sign(rsa_key, clerk_claims(azp=None)))


async def test_token_of_a_pending_session_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = pem_verifier(rsa_key, Clock())
    await refused(verifier, sign(rsa_key, clerk_claims(sts="pending")), "pending")
    assert await verifier.verify(sign(rsa_key, clerk_claims(sts="active")))


# ---------------------------------------------------------------- algorithm pinning


async def test_hs256_token_is_refused_in_clerk_mode(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = pem_verifier(rsa_key, Clock())
    token = jwt.encode(clerk_claims(), DEV_SECRET, algorithm="HS256")
    await refused(verifier, token, "RS256")


async def test_hs256_token_signed_with_the_public_key_as_secret_is_refused(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    # The classic algorithm confusion: the public PEM used as an HMAC secret.
    verifier = pem_verifier(rsa_key, Clock())

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(clerk_claims())}"
    mac = hmac.new(public_pem(rsa_key).encode(), signing_input.encode(), hashlib.sha256)
    signature = base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")
    await refused(verifier, f"{signing_input}.{signature}", "RS256")


async def test_unsigned_alg_none_token_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = pem_verifier(rsa_key, Clock())
    token = jwt.encode(clerk_claims(), None, algorithm="none")
    await refused(verifier, token, "RS256")


# ---------------------------------------------------------------- JWKS over HTTP


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWKS document, counting requests."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.status = 200
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = json.dumps(server.document).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def serve(self, *keys: dict[str, Any]) -> None:
        self.document = {"keys": list(keys)}


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


async def test_keys_are_fetched_once_and_cached_by_kid(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve(jwk(rsa_key, "key-a"))
    clock = Clock()
    verifier = TokenVerifier(make_settings(clerk_jwks_url=jwks_server.url), clock=clock)
    try:
        for _ in range(3):
            clock.advance(1)
            token = sign(rsa_key, clerk_claims(clock.now), kid="key-a")
            assert (await verifier.verify(token)).clerk_id == "user_2abc"
    finally:
        await verifier.aclose()
    assert jwks_server.requests == 1


async def test_unknown_kid_refetches_at_most_once_every_30_seconds(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve(jwk(rsa_key, "key-a"))
    clock = Clock()
    verifier = TokenVerifier(make_settings(clerk_jwks_url=jwks_server.url), clock=clock)
    try:
        assert await verifier.verify(sign(rsa_key, clerk_claims(clock.now), kid="key-a"))
        assert jwks_server.requests == 1

        # Clerk rotates its keys: a token with the new kid triggers a refetch.
        clock.advance(31)
        jwks_server.serve(jwk(rsa_key, "key-a"), jwk(other_rsa_key, "key-b"))
        rotated = sign(other_rsa_key, clerk_claims(clock.now), kid="key-b")
        assert (await verifier.verify(rotated)).clerk_id == "user_2abc"
        assert jwks_server.requests == 2

        # Another unknown kid within 30 seconds is refused without asking Clerk again,
        # even though Clerk now lists it.
        clock.advance(10)
        jwks_server.serve(jwk(rsa_key, "key-c"))
        unknown = sign(rsa_key, clerk_claims(clock.now), kid="key-c")
        await refused(verifier, unknown, "key that Clerk does not list")
        await refused(verifier, sign(rsa_key, clerk_claims(clock.now), kid="key-d"), "not list")
        assert jwks_server.requests == 2

        # Once 30 seconds have passed since the last fetch, it is fetched again.
        clock.advance(20)
        assert await verifier.verify(sign(rsa_key, clerk_claims(clock.now), kid="key-c"))
        assert jwks_server.requests == 3
    finally:
        await verifier.aclose()


async def test_jwks_server_down_gives_unauthenticated(rsa_key: rsa.RSAPrivateKey) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on that port any more: the connection is refused.
    url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    verifier = TokenVerifier(make_settings(clerk_jwks_url=url), clock=Clock())
    try:
        await refused(verifier, sign(rsa_key, clerk_claims()), "key that Clerk does not list")
    finally:
        await verifier.aclose()


async def test_jwks_server_error_or_garbage_gives_unauthenticated(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.status = 500
    clock = Clock()
    verifier = TokenVerifier(make_settings(clerk_jwks_url=jwks_server.url), clock=clock)
    try:
        await refused(verifier, sign(rsa_key, clerk_claims()), "not list")
        jwks_server.status = 200
        jwks_server.document = {"keys": "nonsense"}
        clock.advance(30)
        await refused(verifier, sign(rsa_key, clerk_claims(clock.now)), "not list")
        assert jwks_server.requests == 2
    finally:
        await verifier.aclose()


async def test_token_without_kid_is_refused_in_jwks_mode(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve(jwk(rsa_key, "key-a"))
    verifier = TokenVerifier(make_settings(clerk_jwks_url=jwks_server.url), clock=Clock())
    try:
        await refused(verifier, sign(rsa_key, clerk_claims(), kid=None), "kid")
    finally:
        await verifier.aclose()
    assert jwks_server.requests == 0


# ---------------------------------------------------------------- development tokens


async def test_dev_token_round_trip() -> None:
    clock = Clock()
    verifier = TokenVerifier(make_settings(dev_auth_secret=DEV_SECRET), clock=clock)
    token = mint_dev_token(DEV_SECRET, "dev_ada", "ada", ttl_seconds=3600, now=clock.now)

    identity = await verifier.verify(token)

    assert identity.clerk_id == "dev_ada"
    assert identity.username == "ada"
    assert identity.session_id is None
    assert identity.expires_at == datetime.fromtimestamp(int(START) + 3600, UTC)
    clock.advance(3600 + 5)
    await refused(verifier, token, "expired")


async def test_dev_token_with_another_secret_is_refused() -> None:
    verifier = TokenVerifier(make_settings(dev_auth_secret=DEV_SECRET), clock=Clock())
    token = mint_dev_token("another-secret-" + "y" * 40, "dev_ada", "ada", now=START)
    await refused(verifier, token, "signature is invalid")


async def test_dev_token_defaults_to_a_day_from_now() -> None:
    token = mint_dev_token(DEV_SECRET, "dev_ada", "ada")
    verifier = TokenVerifier(make_settings(dev_auth_secret=DEV_SECRET))
    identity = await verifier.verify(token)
    remaining = identity.expires_at.timestamp() - time.time()
    assert 86400 - 60 < remaining <= 86400


async def test_dev_token_is_refused_in_clerk_mode(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = pem_verifier(rsa_key, Clock(), dev_auth_secret=DEV_SECRET)
    token = mint_dev_token(DEV_SECRET, "dev_ada", "ada", now=START)
    await refused(verifier, token, "RS256")


async def test_rs256_token_is_refused_in_development_mode(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(make_settings(dev_auth_secret=DEV_SECRET), clock=Clock())
    await refused(verifier, sign(rsa_key, clerk_claims()), "HS256")
