"""The HMAC key of attachment URLs: required in production, generated and kept in development."""

from __future__ import annotations

from pathlib import Path

import pytest

from threadline.config import ConfigError, Settings
from threadline.uploads.signing import UrlSigner


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db",
        _env_file=None,  # type: ignore[call-arg]
        **values,  # type: ignore[arg-type]
    )


def test_production_refuses_to_start_without_a_signing_secret(tmp_path: Path) -> None:
    production = {"threadline_env": "production", "clerk_jwks_url": "https://x/jwks.json"}
    with pytest.raises(ConfigError, match="ATTACHMENT_SIGNING_SECRET"):
        _settings(tmp_path, **production).check()
    short = "s3cr3t-but-short"
    with pytest.raises(ConfigError, match="at least 32") as refused:
        _settings(tmp_path, attachment_signing_secret=short, **production).check()
    assert short not in str(refused.value)
    _settings(tmp_path, attachment_signing_secret="k" * 40, **production).check()


def test_development_generates_one_secret_and_keeps_it(tmp_path: Path) -> None:
    first = _settings(tmp_path).resolve_signing_secret()
    assert len(first) >= 32
    assert _settings(tmp_path).resolve_signing_secret() == first
    kept = tmp_path / ".threadline-signing-secret"
    assert kept.stat().st_mode & 0o777 == 0o600


def test_urls_signed_with_another_secret_do_not_verify() -> None:
    ours, theirs = UrlSigner("a" * 40, 3600), UrlSigner("b" * 40, 3600)
    expires = ours.expiry()
    signature = theirs.signature("id", "a.png", expires, "viewer")
    assert ours.check("id", "a.png", str(expires), signature, "viewer") is None
    good = ours.signature("id", "a.png", expires, "viewer")
    assert ours.check("id", "a.png", str(expires), good, "viewer") is not None
    # Minted for one viewer: the same signature does not pass for another.
    assert ours.check("id", "a.png", str(expires), good, "someone else") is None


def test_a_url_stays_the_same_within_half_its_lifetime() -> None:
    now = [1_000_000_000.0]
    signer = UrlSigner("a" * 40, 3600, clock=lambda: now[0])
    expiries = set()
    for _ in range(1800):
        expiries.add(signer.expiry())
        left = signer.expiry() - now[0]
        assert 1800 < left <= 3600
        now[0] += 1
    assert len(expiries) <= 2
