"""Who is calling: Clerk's RS256 session tokens in Clerk mode, else HS256 development tokens.

Every refusal is an ``Unauthenticated`` that names the problem, never the token or a key.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from pydantic import SecretStr

from threadline.config import ConfigError, Settings
from threadline.errors import Unauthenticated
from threadline.services.clerk_sync import Identity
from threadline.services.text_rules import clean_external_text

log = logging.getLogger(__name__)

CLERK_ALGORITHM = "RS256"
DEV_ALGORITHM = "HS256"
DEV_TOKEN_SECONDS = 86400
LEEWAY_SECONDS = 5.0
# The caller picks the kid, so an unknown one must not become a way to hammer Clerk.
JWKS_REFETCH_SECONDS = 30.0
# Keys removed from the JWKS stop being trusted within this long.
JWKS_MAX_AGE_SECONDS = 3600.0
JWKS_TIMEOUT_SECONDS = 5.0
# Clerk's ids are short ("user_2abc...", "sess_2abc...", ~32 characters); development
# ids are "dev_" and a username of at most 64. Anything longer is no id of theirs.
MAX_ID_LENGTH = 128

# Time claims are checked here against the injected clock, issuer and party by Clerk's
# rules; PyJWT checks the signature and the algorithm only.
_SIGNATURE_ONLY: jwt.types.Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}


class _JwksKeys:
    """Clerk's signing keys by ``kid``, fetched lazily and refetched sparingly."""

    def __init__(
        self, url: str, clock: Callable[[], float], http: httpx.AsyncClient | None
    ) -> None:
        self._url = url
        self._clock = clock
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient()
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        # Concurrent requests with the same new kid share one fetch.
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> Any:
        if not self._is_fresh(kid):
            async with self._lock:
                if not self._is_fresh(kid) and self._may_fetch():
                    await self._refresh()
        # A stale key still serves while Clerk cannot be reached.
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("token is signed by a key that Clerk does not list")
        return key

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def _is_fresh(self, kid: str) -> bool:
        return (
            kid in self._keys
            and self._fetched_at is not None
            and self._clock() - self._fetched_at < JWKS_MAX_AGE_SECONDS
        )

    def _may_fetch(self) -> bool:
        attempted = self._attempted_at
        return attempted is None or self._clock() - attempted >= JWKS_REFETCH_SECONDS

    async def _refresh(self) -> None:
        self._attempted_at = self._clock()
        try:
            response = await self._http.get(self._url, timeout=JWKS_TIMEOUT_SECONDS)
            response.raise_for_status()
            keys = _rs256_keys(response.json())
        # Whatever goes wrong (network, status, body), the caller gets Unauthenticated.
        except Exception as error:
            log.warning("fetching Clerk's JWKS failed: %s", type(error).__name__)
            return
        self._keys = keys
        self._fetched_at = self._clock()


def _rs256_keys(document: object) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, Any] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg", CLERK_ALGORITHM) == CLERK_ALGORITHM:
            with suppress(jwt.PyJWTError):
                keys[kid] = jwt.PyJWK(entry, CLERK_ALGORITHM).key
    if not keys:
        raise ValueError("the JWKS lists no RS256 signing key")
    return keys


def _load_pem_key(secret: SecretStr) -> RSAPublicKey:
    # Keys pasted into one-line environment values often carry literal "\n" sequences.
    text = secret.get_secret_value().strip().strip("\"'").replace("\\n", "\n")
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ConfigError("CLERK_JWT_KEY is not a PEM public key") from None
    if not isinstance(key, RSAPublicKey):
        raise ConfigError("CLERK_JWT_KEY must be an RSA public key")
    return key


class TokenVerifier:
    """Turns a bearer token into an ``Identity`` or raises ``Unauthenticated``.

    CLERK_JWT_KEY, when set, needs no network; else keys come from CLERK_JWKS_URL.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._clock = clock
        self._clerk = settings.clerk_enabled
        self._issuer = settings.clerk_issuer
        self._parties = frozenset(settings.clerk_authorized_parties)
        self._pem_key: RSAPublicKey | None = None
        self._jwks: _JwksKeys | None = None
        self._dev_secret: str | None = None
        if settings.clerk_jwt_key is not None:
            self._pem_key = _load_pem_key(settings.clerk_jwt_key)
        elif settings.clerk_jwks_url is not None:
            self._jwks = _JwksKeys(settings.clerk_jwks_url, clock, http)
        else:
            self._dev_secret = settings.resolve_dev_secret()

    async def verify(self, token: str) -> Identity:
        if not isinstance(token, str) or not token.strip():
            raise Unauthenticated("no token was given")
        token = token.strip()
        if not token.isascii():  # as a JWT is; PyJWT cannot even encode a lone surrogate
            raise Unauthenticated("token is malformed")
        if self._clerk:
            key = await self._clerk_key(token)
            claims = _decode(token, key, CLERK_ALGORITHM, "Clerk session tokens")
        else:
            if self._dev_secret is None:
                raise Unauthenticated("development tokens are disabled")
            claims = _decode(token, self._dev_secret, DEV_ALGORITHM, "development tokens")
        return self._identity(claims)

    async def aclose(self) -> None:
        if self._jwks is not None:
            await self._jwks.aclose()

    async def _clerk_key(self, token: str) -> Any:
        try:
            header = jwt.get_unverified_header(token)
        # A header nested past the JSON parser's depth raises RecursionError.
        except (jwt.PyJWTError, RecursionError):
            raise Unauthenticated("token is malformed") from None
        # Checked before any key lookup, so a forged HS256 or "none" token costs no fetch.
        if header.get("alg") != CLERK_ALGORITHM:
            raise Unauthenticated(f"Clerk session tokens must be signed with {CLERK_ALGORITHM}")
        if self._pem_key is not None:
            return self._pem_key
        assert self._jwks is not None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token names no signing key (kid)")
        return await self._jwks.key_for(kid)

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        now = self._clock()
        expires = _time_claim(claims, "exp")
        if expires is None:
            raise Unauthenticated("token has no exp claim")
        if now >= expires + LEEWAY_SECONDS:
            raise Unauthenticated("token has expired")
        not_before = _time_claim(claims, "nbf")
        if not_before is not None and not_before > now + LEEWAY_SECONDS:
            raise Unauthenticated("token is not valid yet")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token has no subject (sub)")
        if not _plausible_id(subject):
            raise Unauthenticated("token's subject (sub) is not a user id")
        session_id = claims.get("sid")
        if not isinstance(session_id, str) or not session_id:
            session_id = None
        elif not _plausible_id(session_id):
            raise Unauthenticated("token's session (sid) is not a session id")
        if self._clerk:
            if self._issuer is not None and claims.get("iss") != self._issuer:
                raise Unauthenticated("token was issued by another issuer")
            if self._parties:
                party = claims.get("azp")
                if party is None:
                    raise Unauthenticated("token names no authorized party (azp)")
                # A list or object is no party (and cannot be looked up in a set).
                if not isinstance(party, str) or party not in self._parties:
                    raise Unauthenticated("token was issued for another authorized party")
            # A pending session has sign-in tasks left: it must not act as the user yet.
            if claims.get("sts") == "pending":
                raise Unauthenticated("session is pending: finish signing in first")
        return Identity(
            clerk_id=subject,
            session_id=session_id,
            expires_at=datetime.fromtimestamp(expires, UTC),
            username=_text_claim(claims, "username"),
            name=_text_claim(claims, "name"),
            image_url=_text_claim(claims, "image_url"),
        )


def _decode(token: str, key: Any, algorithm: str, kind: str) -> dict[str, Any]:
    # PyJWT's messages are not passed on: only ours are known to carry nothing secret.
    try:
        claims = jwt.decode(token, key, algorithms=[algorithm], options=_SIGNATURE_ONLY)
    except jwt.InvalidAlgorithmError:
        raise Unauthenticated(f"{kind} must be signed with {algorithm}") from None
    except jwt.InvalidSignatureError:
        raise Unauthenticated("token signature is invalid") from None
    except (jwt.PyJWTError, RecursionError):
        raise Unauthenticated("token is malformed") from None
    if not isinstance(claims, dict):
        raise Unauthenticated("token is malformed")
    return claims


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int, and JSON as Python reads it allows NaN and Infinity.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated(f"token's {name} claim is not a time")
    if not math.isfinite(value) or not 0 <= value < 253402300800:
        raise Unauthenticated(f"token's {name} claim is not a time")
    return float(value)


def _plausible_id(value: str) -> bool:
    """An id as Clerk (or ``threadline token``) makes them: bounded, one printable word;
    ids become columns, keys and log fields, where a NUL or kilobytes would fail."""
    # isprintable() refuses every whitespace character but the space.
    return len(value) <= MAX_ID_LENGTH and value.isprintable() and " " not in value


def _text_claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if not isinstance(value, str):
        return None
    # Claims are JSON: they may carry NUL or lone surrogates, which no column takes.
    return clean_external_text(value) or None


def mint_dev_token(
    secret: str,
    clerk_id: str,
    username: str,
    *,
    ttl_seconds: int = DEV_TOKEN_SECONDS,
    now: float | None = None,
) -> str:
    issued_at = int(time.time() if now is None else now)
    claims = {
        "sub": clerk_id,
        "username": username,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm=DEV_ALGORITHM)
