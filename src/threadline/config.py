"""Settings: the environment variables of CONTRACT.md's configuration table, read once.

Nothing else in the package reads ``os.environ``; everything that needs a setting is
handed the one ``Settings`` object that ``create_app`` or the CLI built.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./threadline.db"
DEV_SECRET_FILENAME = ".threadline-dev-secret"  # noqa: S105 - a file name, not a secret


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ConfigError(Exception):
    """The configuration cannot work; the message says why in one line."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    threadline_env: Environment = Environment.DEVELOPMENT
    clerk_jwks_url: str | None = None
    clerk_jwt_key: SecretStr | None = None
    clerk_issuer: str | None = None
    clerk_authorized_parties: Annotated[list[str], NoDecode] = Field(default_factory=list)
    clerk_webhook_secret: SecretStr | None = None
    dev_auth_secret: SecretStr | None = None
    upload_dir: Path = Path("./uploads")
    max_upload_bytes: int = Field(default=26_214_400, gt=0)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rate_limits: bool = True
    ws_reauth_seconds: int = Field(default=900, ge=0)
    public_url: str | None = None
    max_request_bytes: int = Field(default=1_048_576, gt=0)
    attachment_url_seconds: int = Field(default=3600, gt=0)
    max_query_cost: int = Field(default=50_000, gt=0)
    # Clerk's publishable key (pk_live_... / pk_test_...): how the web page signs in.
    clerk_publishable_key: str | None = None

    @field_validator("clerk_authorized_parties", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"on", "off"}:
            return value.strip().lower() == "on"
        return value

    @field_validator("redis_url", "clerk_jwks_url", "clerk_issuer", "public_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("clerk_publishable_key", mode="before")
    @classmethod
    def _blank_key_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("clerk_jwt_key", "clerk_webhook_secret", "dev_auth_secret", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def is_production(self) -> bool:
        return self.threadline_env is Environment.PRODUCTION

    @property
    def clerk_enabled(self) -> bool:
        """Clerk mode: RS256 session tokens only; development tokens are refused."""
        return bool(self.clerk_jwks_url or self.clerk_jwt_key)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

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

    def resolve_dev_secret(self) -> str | None:
        """The HS256 secret for development tokens, generated and kept on first use.

        It lives beside the SQLite file (or in the working directory) so that tokens
        minted by ``threadline token`` keep working across restarts of ``serve``.
        """
        if self.clerk_enabled or self.is_production:
            return None
        if self.dev_auth_secret is not None:
            return self.dev_auth_secret.get_secret_value()
        folder = self.sqlite_path.parent if self.sqlite_path else Path(".")
        path = folder / DEV_SECRET_FILENAME
        if path.exists():
            return path.read_text().strip()
        folder.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        path.write_text(secret)
        path.chmod(0o600)
        return secret


def load_settings(**overrides: object) -> Settings:
    """Build and check the settings; overrides are for tests and the CLI."""
    settings = Settings(**overrides)  # type: ignore[arg-type]
    settings.check()
    return settings
