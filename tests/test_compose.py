"""docker-compose.yml: the services a deployment needs, wired in order, configured by name.

Plain functions with no fixtures: these tests read files and need no database.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from threadline.config import Settings

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
DOCKERFILE = COMPOSE_FILE.with_name("Dockerfile")
REQUIRED_SERVICES = {"postgres", "redis", "migrate", "app", "backup"}
SETTINGS_NAMES = {name.upper() for name in Settings.model_fields}

# Shapes of real secrets: Clerk keys, Svix webhook secrets, PEM blocks.
LITERAL_SECRET = re.compile(
    r"sk_(live|test)_[A-Za-z0-9]{8,}|whsec_[A-Za-z0-9+/=]{8,}|-----BEGIN [A-Z ]*PRIVATE KEY"
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
# "${NAME}", "${NAME:-default}", "${NAME:?message}" and their forms without the colon.
INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}")
# scheme://user:password@host: the password part.
URL_PASSWORD = re.compile(r"://[^:/@\s]+:([^@\s]+)@")


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _service(name: str) -> dict[str, Any]:
    service = _compose()["services"][name]
    assert isinstance(service, dict)
    return service


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, from either of compose's two spellings."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (entry.split("=", 1) for entry in environment)
        return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}
    return {str(name): "" if value is None else str(value) for name, value in environment.items()}


def _strings(node: object) -> list[str]:
    """Every string in the parsed file, keys and values."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in _strings(key) + _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def _is_only_interpolation(value: str) -> bool:
    return INTERPOLATION.fullmatch(value) is not None


def test_the_deployment_has_database_cache_migration_app_and_backup_services() -> None:
    assert set(_compose()["services"]) >= REQUIRED_SERVICES


def test_app_and_migrate_are_configured_only_with_settings_names() -> None:
    for name in ("app", "migrate"):
        unknown = set(_environment(_service(name))) - SETTINGS_NAMES
        assert not unknown, f"{name} sets variables that Settings does not read: {sorted(unknown)}"


def test_app_runs_in_production_against_postgresql_and_redis() -> None:
    environment = _environment(_service("app"))
    assert environment["THREADLINE_ENV"] == "production"
    assert environment["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert environment["REDIS_URL"].startswith("redis://")
    assert environment["CLERK_JWKS_URL"] or environment.get("CLERK_JWT_KEY")


def test_migrate_and_app_share_one_image() -> None:
    app, migrate = _service("app"), _service("migrate")
    assert app["image"] == migrate["image"]
    assert app.get("build") == migrate.get("build")
    assert migrate["command"] == ["threadline", "migrate"]
    assert _environment(migrate)["DATABASE_URL"] == _environment(app)["DATABASE_URL"]
    # Revisions may read attachment files (0003 reads image headers), never write them.
    assert _environment(migrate)["UPLOAD_DIR"] == _environment(app)["UPLOAD_DIR"]
    assert f"uploads:{_environment(app)['UPLOAD_DIR']}:ro" in migrate["volumes"]


def test_app_starts_after_a_successful_migration_and_healthy_redis() -> None:
    depends_on = _service("app")["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_migration_waits_for_a_healthy_database() -> None:
    assert _service("migrate")["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_database_and_cache_have_healthchecks() -> None:
    for name in ("postgres", "redis"):
        assert _service(name)["healthcheck"]["test"], f"{name} has no healthcheck"


def test_backups_run_threadline_backup_on_the_app_database_and_read_uploads_read_only() -> None:
    backup, app = _service("backup"), _service("app")
    assert backup["image"] == app["image"] and backup.get("build") == app.get("build")
    script = " ".join(_strings(backup.get("command")) + _strings(backup.get("entrypoint")))
    assert "threadline backup /backups --keep" in script
    assert "pg_dump" not in script  # the command does it, from one snapshot with the files
    environment = _environment(backup)
    assert environment["DATABASE_URL"] == _environment(app)["DATABASE_URL"]
    assert environment["UPLOAD_DIR"] == _environment(app)["UPLOAD_DIR"]
    volumes = [str(volume) for volume in backup["volumes"]]
    assert "backups:/backups" in volumes
    assert f"uploads:{environment['UPLOAD_DIR']}:ro" in volumes
    assert any(volume.startswith("uploads:") for volume in app["volumes"])
    assert backup["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_the_image_carries_the_pg_dump_of_the_database_services_major_version() -> None:
    postgres_major = _service("postgres")["image"].split(":")[1].split(".")[0]
    dockerfile = DOCKERFILE.read_text()
    assert f"ARG PG_CLIENT_MAJOR={postgres_major}\n" in dockerfile
    assert '"postgresql-client-${PG_CLIENT_MAJOR}"' in dockerfile
    assert "/backups" in dockerfile  # the volume's mount point, owned by the app user


def test_no_literal_secret_appears_in_the_compose_file() -> None:
    text = COMPOSE_FILE.read_text()
    assert not LITERAL_SECRET.search(text), "a literal secret is in docker-compose.yml"


def test_secret_variables_come_from_the_environment() -> None:
    for name, service in _compose()["services"].items():
        for variable, value in _environment(service).items():
            if SECRET_NAME.search(variable) and value:
                assert _is_only_interpolation(value), f"{name}: {variable} is not ${{...}}"
            for password in URL_PASSWORD.findall(value):
                assert _is_only_interpolation(password), f"{name}: {variable} has a password"


def test_pgbouncer_is_an_optional_profile_in_transaction_mode_on_a_pinned_image() -> None:
    pgbouncer = _service("pgbouncer")
    assert pgbouncer["profiles"] == ["pgbouncer"]
    assert _environment(pgbouncer)["POOL_MODE"] == "transaction"
    _, _, tag = pgbouncer["image"].partition(":")
    assert tag and tag != "latest"
    # Without the profile the app does not wait for a service that never starts.
    assert _service("app")["depends_on"]["pgbouncer"]["required"] is False


def test_every_database_client_knows_the_pooler_and_postgresql_s_own_address() -> None:
    for name in ("app", "migrate", "backup"):
        environment = _environment(_service(name))
        assert "@${DATABASE_HOST:-postgres}:5432/" in environment["DATABASE_URL"]
        assert environment["DATABASE_POOLER"] == "${DATABASE_POOLER:-none}"
        # Migrations and backups need a session of their own: past the pooler.
        assert "@postgres:5432/" in environment["DATABASE_DIRECT_URL"]
