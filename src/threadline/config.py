"""Settings: CONTRACT.md's environment variables, read once; nothing else reads os.environ."""

from __future__ import annotations

import os
import re
import secrets
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class DatabasePooler(StrEnum):
    """What sits between the app and PostgreSQL (DATABASE_POOLER)."""

    NONE = "none"
    # Transaction pooling: no prepared statement or session state outlives a transaction.
    PGBOUNCER = "pgbouncer"


class ConfigError(Exception):
    """The configuration cannot work; the message says why in one line."""


# The actions with a per-user moving window (CONTRACT.md's limits), each set by
# RATE_LIMIT_<ACTION> as "N/SECONDS": at most N calls in any SECONDS-long window.
RATE_LIMITED_ACTIONS = ("send_message", "set_typing", "upload", "mutation", "ws_connect")
_WINDOW = re.compile(r"\s*([1-9][0-9]*)\s*/\s*([1-9][0-9]*)\s*")


def parse_window(text: str) -> tuple[int, int]:
    """Parse "N/SECONDS" into (N, SECONDS); ValueError unless both are positive integers."""
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not N/SECONDS (two positive integers, e.g. 20/2)")
    return int(match.group(1)), int(match.group(2))


def _window(text: str) -> str:
    count, seconds = parse_window(text)
    return f"{count}/{seconds}"


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _on_off(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in {"on", "off"}:
        return value.strip().lower() == "on"
    return value


def _blank_is_unset(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _key_prefix(value: str) -> str:
    # Braces would make a hash tag of the prefix: every key in one cluster slot.
    if re.search(r"[{}\s]", value):
        raise ValueError("REDIS_PREFIX may not contain braces or whitespace")
    return value


def _metrics_target(value: object) -> object:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return value
    target = value.strip().lower()
    if target in {"app", "on", "off"}:
        return "app" if target == "on" else target
    host, _, port = target.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("METRICS must be app, off, or [host:]port (a port of its own)")
    return f"{host or '0.0.0.0'}:{int(port)}"


T = TypeVar("T")
BlankIsNone = Annotated[T | None, BeforeValidator(_blank_is_unset)]
OnOff = Annotated[bool, BeforeValidator(_on_off)]
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
Window = Annotated[str, AfterValidator(_window)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = "sqlite+aiosqlite:///./threadline.db"
    # A hot standby of DATABASE_URL: query operations read content from it (db.Database);
    # a user who wrote within READ_AFTER_WRITE_SECONDS reads the primary instead.
    database_read_url: BlankIsNone[str] = None
    read_after_write_seconds: float = Field(default=5.0, ge=0)
    database_pooler: DatabasePooler = DatabasePooler.NONE
    # PostgreSQL itself, past the pooler: migrations, backups and restores need a session.
    database_direct_url: BlankIsNone[str] = None
    redis_url: BlankIsNone[str] = None
    # on: REDIS_URL names a node of a Redis Cluster (sharded pub/sub, slot-routed commands).
    redis_cluster: OnOff = False
    # Before every Redis key and channel name: deployments sharing one Redis keep apart.
    redis_prefix: Annotated[str, AfterValidator(_key_prefix)] = ""
    threadline_env: Environment = Environment.DEVELOPMENT
    clerk_jwks_url: BlankIsNone[str] = None
    clerk_jwt_key: BlankIsNone[SecretStr] = None
    clerk_issuer: BlankIsNone[str] = None
    clerk_authorized_parties: CommaList = Field(default_factory=list)
    clerk_webhook_secret: BlankIsNone[SecretStr] = None
    dev_auth_secret: BlankIsNone[SecretStr] = None
    upload_dir: Path = Path("./uploads")
    max_upload_bytes: int = Field(default=26_214_400, gt=0)
    # off: no image previews rendered (a render of a hostile PNG at the pixel limit
    # peaks at about 750 MB; a small container may not have that to spare).
    image_previews: OnOff = True
    cors_origins: CommaList = Field(default_factory=list)
    rate_limits: OnOff = True
    # off: every fast path off (driver reads, the group-commit send, raw socket frames,
    # direct execution); the answers are the same, only slower.
    fast_paths: OnOff = True
    ws_reauth_seconds: int = Field(default=900, ge=0)
    public_url: BlankIsNone[str] = None
    # Strict-Transport-Security max-age on answers to HTTPS requests; 0: not sent.
    hsts_seconds: int = Field(default=0, ge=0)
    max_request_bytes: int = Field(default=1_048_576, gt=0)
    attachment_url_seconds: int = Field(default=3600, gt=0)
    # The HMAC key of signed attachment URLs; required in production.
    attachment_signing_secret: BlankIsNone[SecretStr] = None
    max_query_cost: int = Field(default=50_000, gt=0)
    # The contract's limits; the defaults are CONTRACT.md's, here and nowhere else.
    rate_limit_send_message: Window = "20/2"
    rate_limit_set_typing: Window = "2/1"
    rate_limit_upload: Window = "10/60"
    rate_limit_mutation: Window = "30/1"
    rate_limit_ws_connect: Window = "10/60"
    max_subscriptions_per_connection: int = Field(default=100, gt=0)
    max_query_depth: int = Field(default=12, gt=0)
    max_aliases: int = Field(default=15, ge=0)
    max_tokens: int = Field(default=5000, gt=0)
    # Slow clients (http_limits, uvicorn_seam): a head's deadline, a body's pause and rate.
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_min_bytes_per_second: int = Field(default=8192, ge=0)
    # /metrics: "app" (on the main port), "off", or "[host:]port" (a listener of its own).
    # Unset: on the app in development, off in production (it names routes and counts).
    metrics: Annotated[str | None, BeforeValidator(_metrics_target)] = None
    # Clerk's publishable key (pk_live_... / pk_test_...): how the web page signs in.
    clerk_publishable_key: BlankIsNone[str] = None

    @field_validator("database_pooler", mode="before")
    @classmethod
    def _pooler_name(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or DatabasePooler.NONE
        return value

    def rate_limit_windows(self) -> dict[str, tuple[int, int]]:
        """(calls, seconds) per rate-limited action name."""
        return {
            action: parse_window(getattr(self, f"rate_limit_{action}"))
            for action in RATE_LIMITED_ACTIONS
        }

    @property
    def is_production(self) -> bool:
        return self.threadline_env is Environment.PRODUCTION

    @property
    def metrics_on_app(self) -> bool:
        """/metrics on the main port: when asked for, or by default in development."""
        if self.metrics is None:
            return not self.is_production
        return self.metrics == "app"

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) of a listener for /metrics alone, when METRICS names one."""
        if self.metrics is None or self.metrics in {"app", "off"}:
            return None
        host, _, port = self.metrics.rpartition(":")
        return host, int(port)

    @property
    def clerk_enabled(self) -> bool:
        """Clerk mode: RS256 session tokens only; development tokens are refused."""
        return bool(self.clerk_jwks_url or self.clerk_jwt_key)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def pooled(self) -> bool:
        """DATABASE_URL reaches PostgreSQL through a transaction-mode pooler."""
        return self.database_pooler is DatabasePooler.PGBOUNCER

    @property
    def direct_database_url(self) -> str:
        """Where migrations, backups and restores connect: never through a pooler."""
        if self.database_direct_url is not None:
            return self.database_direct_url
        if self.pooled:
            raise ConfigError(
                "DATABASE_POOLER=pgbouncer: migrations, backups and restores need "
                "DATABASE_DIRECT_URL (PostgreSQL itself, not PgBouncer)"
            )
        return self.database_url

    @cached_property
    def sqlite_path(self) -> Path | None:
        """The database file of a file-backed SQLite URL, else None."""
        if not self.is_sqlite:
            return None
        _, _, rest = self.database_url.partition(":///")
        path = rest.split("?", 1)[0]
        if not path or path == ":memory:":
            return None
        return Path(path)

    def check(self) -> None:
        """Refuse configurations that cannot be right; raises ConfigError with one line."""
        _check_database_urls(
            DATABASE_URL=self.database_url,
            DATABASE_READ_URL=self.database_read_url,
            DATABASE_DIRECT_URL=self.database_direct_url,
        )
        if self.database_read_url is not None and (
            self.is_sqlite or not self.database_read_url.startswith("postgresql+asyncpg://")
        ):
            raise ConfigError(
                "DATABASE_READ_URL needs PostgreSQL for both it and DATABASE_URL "
                "(postgresql+asyncpg://...): a replica is a hot standby of the primary"
            )
        if self.redis_url is not None:
            _check_redis_url(self.redis_url)
        if self.redis_cluster and not self.redis_url:
            raise ConfigError("REDIS_CLUSTER=on needs REDIS_URL (any node of the cluster)")
        if self.is_sqlite and (self.pooled or self.database_direct_url is not None):
            raise ConfigError(
                "DATABASE_POOLER and DATABASE_DIRECT_URL are for PostgreSQL: DATABASE_URL is SQLite"
            )
        if self.database_direct_url is not None and not self.database_direct_url.startswith(
            "postgresql+asyncpg://"
        ):
            raise ConfigError("DATABASE_DIRECT_URL must be a postgresql+asyncpg:// URL")
        if self.is_production:
            if self.dev_auth_secret is not None:
                raise ConfigError(
                    "THREADLINE_ENV=production refuses development auth: unset DEV_AUTH_SECRET"
                )
            if not self.clerk_enabled:
                raise ConfigError(
                    "THREADLINE_ENV=production needs Clerk keys: "
                    "set CLERK_JWKS_URL or CLERK_JWT_KEY"
                )
            if self.attachment_signing_secret is None:
                raise ConfigError(
                    "THREADLINE_ENV=production needs ATTACHMENT_SIGNING_SECRET "
                    "(a long random string) to sign attachment URLs"
                )
            if len(self.attachment_signing_secret.get_secret_value()) < 32:
                raise ConfigError("ATTACHMENT_SIGNING_SECRET must be at least 32 characters")

    def resolve_dev_secret(self) -> str | None:
        """The HS256 secret of development tokens, generated and kept on first use."""
        if self.clerk_enabled or self.is_production:
            return None
        if self.dev_auth_secret is not None:
            return self.dev_auth_secret.get_secret_value()
        return self._kept_secret(".threadline-dev-secret")

    def resolve_signing_secret(self) -> str:
        """The HMAC key of attachment URLs; kept like the development token secret."""
        if self.attachment_signing_secret is not None:
            return self.attachment_signing_secret.get_secret_value()
        if self.is_production:
            raise ConfigError("THREADLINE_ENV=production needs ATTACHMENT_SIGNING_SECRET")
        return self._kept_secret(".threadline-signing-secret")

    def _kept_secret(self, filename: str) -> str:
        """A random secret kept beside the SQLite file (or in the working directory), so that
        tokens and URLs stay valid across restarts and every process agrees on it."""
        folder = self.sqlite_path.parent if self.sqlite_path else Path(".")
        path = folder / filename
        if path.exists():
            return _read_kept_secret(path)
        folder.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        # Written whole under a private name of its own, then linked: no process reads it
        # half-written (or empty, should this one die or the disk fill), and when several
        # start at once the first link wins.
        temporary = folder / f"{filename}.{secrets.token_hex(8)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secret)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)
        except FileExistsError:
            return _read_kept_secret(path)
        finally:
            temporary.unlink(missing_ok=True)
        return secret


# The kept secrets are token_urlsafe(48): 64 characters. Fewer is a damaged file.
KEPT_SECRET_MIN_LENGTH = 32


def _read_kept_secret(path: Path) -> str:
    secret = path.read_text().strip()
    if len(secret) < KEPT_SECRET_MIN_LENGTH:
        raise ConfigError(
            f"{path} is empty or damaged (under {KEPT_SECRET_MIN_LENGTH} characters): delete "
            "it for a new secret (what the old one signed stops working) or set the variable"
        )
    return secret


def without_passwords(message: str, *urls: str | None) -> str:
    """``message`` with the password of each database URL taken out, should a driver or a
    client tool ever echo one."""
    from sqlalchemy.engine import make_url

    for url in urls:
        password = make_url(url).password if url else None
        if password:
            message = message.replace(str(password), "***")
    return message


def _check_database_urls(**urls: str | None) -> None:
    """Each URL set parses, and DATABASE_URL names a driver of ours; the messages never
    repeat a URL (it may hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    for name, url in urls.items():
        if url is None:
            continue
        try:
            driver = make_url(url).drivername
        except (ArgumentError, ValueError):
            raise ConfigError(
                f"{name} is not a database URL (e.g. postgresql+asyncpg://user:password@host"
                "/name or sqlite+aiosqlite:///./threadline.db)"
            ) from None
        # The async drivers the app is written for (db.py speaks to asyncpg directly).
        if name == "DATABASE_URL" and driver not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
            raise ConfigError(
                f"DATABASE_URL must be postgresql+asyncpg://... or sqlite+aiosqlite:///..."
                f" (it names {driver!r})"
            )


def _check_redis_url(url: str) -> None:
    """REDIS_URL is one redis-py reads (scheme, port, options); the message never repeats
    it or redis-py's (a password, or part of one)."""
    from redis.asyncio.connection import parse_url

    try:
        parse_url(url)
    except ValueError:
        raise ConfigError(
            "REDIS_URL must be a redis://, rediss:// or unix:// URL with a numeric port and"
            " known options (e.g. redis://redis:6379/0)"
        ) from None


def load_settings(**overrides: object) -> Settings:
    """Build and check the settings; overrides are for tests and the CLI."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    settings.check()
    return settings


def _describe(exc: ValidationError) -> str:
    """One line per bad variable, without its value (a secret must not reach a log)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        name = str(error["loc"][0]).upper() if error["loc"] else "configuration"
        problems.append(f"{name}: {error['msg']}")
    return "; ".join(problems)
