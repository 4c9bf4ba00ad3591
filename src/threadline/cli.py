"""The threadline command: serve, migrate, token, users set-role, seed, backup, restore."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import NoReturn

from threadline.config import ConfigError, Settings, load_settings, without_passwords
from threadline.models import SystemRole

# uvicorn's sans-I/O WebSocket protocol: no task per connection (the legacy one keeps
# three), and a frame is written at once unless the peer stopped reading.
WEBSOCKET_IMPLEMENTATION = "websockets-sansio"
# The only keep-alive of a graphql-transport-ws socket: idle proxies see traffic, and a
# dead peer is closed, ending its presence lease and session row.
WS_PING_SECONDS = 20.0
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _fail(message: str, code: int) -> NoReturn:
    print(f"threadline: {message}", file=sys.stderr)
    raise SystemExit(code)


def _os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename is not None else reason


@contextmanager
def _database_errors(settings: Settings, doing: str) -> Iterator[None]:
    """A database that cannot be reached or used is one line and exit 1, not a traceback;
    the password is never in it (a driver might echo the URL)."""
    from sqlalchemy.exc import SQLAlchemyError

    from threadline.errors import DomainError, ServiceUnavailable

    def scrubbed(message: str) -> str:
        urls = (settings.database_url, settings.database_direct_url)
        return " ".join(without_passwords(message, *urls).split())

    try:
        yield
    except ServiceUnavailable as exc:  # its message is the API's advice to clients
        cause = getattr(exc.__cause__, "orig", None) or exc.__cause__ or exc
        _fail(f"{doing}: cannot reach the database: {scrubbed(str(cause).splitlines()[0])}", 1)
    except DomainError as exc:
        _fail(exc.message, 1)
    except OSError as exc:
        if exc.filename is not None:  # a folder or file of ours, e.g. SQLite's
            _fail(f"{doing}: {_os_error(exc)}", 1)
        _fail(f"{doing}: cannot reach the database: {scrubbed(exc.strerror or str(exc))}", 1)
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        _fail(f"{doing}: the database: {scrubbed(detail)}", 1)
    except Exception as exc:
        # Alembic's (imported only by commands that migrate: importing it logs):
        # e.g. a revision in the database that this threadline does not ship.
        alembic_util = sys.modules.get("alembic.util")
        if alembic_util is None or not isinstance(exc, alembic_util.CommandError):
            raise
        _fail(
            f"{doing}: {scrubbed(str(exc))} (the database is at a revision this threadline "
            "does not know: was it migrated by a newer version?)",
            1,
        )


def _migrate(settings: Settings) -> None:
    from threadline.migrate import upgrade_to_head

    with _database_errors(settings, "migrate"):
        if settings.sqlite_path is not None:
            settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        # Past any pooler: a migration is one long transaction of DDL.
        upgrade_to_head(settings.direct_database_url, settings.upload_dir)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from threadline.access_log import log_config
    from threadline.uploads.storage import unfinished_restore

    settings = load_settings()
    # The app refuses too (bare uvicorn); here as well, before migrating, and so that
    # --workers, whose supervisor exits 0 when a worker cannot start, exits 3.
    if problem := unfinished_restore(settings.upload_dir):
        _fail(problem, 3)
    if settings.is_sqlite:
        # The embedded default migrates itself; PostgreSQL deployments run `migrate`.
        _migrate(settings)
    if args.workers > 1 and not settings.redis_url:
        _fail("--workers > 1 needs REDIS_URL (events must cross processes)", 2)
    uvicorn.run(
        "threadline.asgi:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        # uvicorn formats each access line before the logger drops it: off unless shown.
        access_log=args.log_level.lower() in ("trace", "debug", "info"),
        # Paths without their query strings: a signed download URL is a credential.
        log_config=log_config(LOGGING_CONFIG),
        ws=args.ws,
        http="threadline.asgi:http_protocol",
        ws_per_message_deflate=args.ws_per_message_deflate,
        # A WebSocket message is a request too: bounded like a body (uvicorn's default is 16 MiB).
        ws_max_size=settings.max_request_bytes,
        ws_ping_interval=WS_PING_SECONDS,
        ws_ping_timeout=WS_PING_SECONDS,
        proxy_headers=True,
        lifespan="on",
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _migrate(load_settings())
    print("database is at the newest revision")
    return 0


def _run_work(settings: Settings, name: str, work: object, *, publish: bool = False) -> object:
    """``work(uow)`` in one transaction, its failures one line (see _database_errors)."""
    with _database_errors(settings, name.removeprefix("cli_").replace("_", "-")):
        return asyncio.run(_with_db(settings, name, work, publish=publish))


async def _with_db(settings: Settings, name: str, work: object, *, publish: bool) -> object:
    from threadline.db import Database, make_engine
    from threadline.realtime.broker import Broker
    from threadline.realtime.channels import publish_all
    from threadline.realtime.redis_pool import settings_target

    # With Redis, what the work emits reaches the running servers (a role change closes sockets).
    redis = settings_target(settings)
    broker = Broker(redis) if publish and redis else None
    db = Database(make_engine(settings.database_url, pooled=settings.pooled))
    if broker is not None:
        await broker.connect()
        db.publish = partial(publish_all, broker)
    try:
        async with db.transaction(name) as uow:
            return await work(uow)  # type: ignore[operator]
    finally:
        await db.dispose()
        if broker is not None:
            await broker.disconnect()


def cmd_token(args: argparse.Namespace) -> int:
    from threadline.auth.tokens import mint_dev_token
    from threadline.services.users import ensure_dev_user

    settings = load_settings()
    secret = settings.resolve_dev_secret()
    if secret is None:
        _fail("development tokens are off (Clerk keys are set, or production)", 2)
    if settings.is_sqlite:
        _migrate(settings)
    user = _run_work(settings, "cli_token", lambda uow: ensure_dev_user(uow, args.username))
    print(mint_dev_token(secret, user.clerk_id, args.username, ttl_seconds=args.ttl))  # type: ignore[attr-defined]
    return 0


def cmd_set_role(args: argparse.Namespace) -> int:
    from threadline.services.users import set_role_by_username

    role = SystemRole(args.role.upper())
    _run_work(
        load_settings(),
        "cli_set_role",
        lambda uow: set_role_by_username(uow, args.username, role),
        publish=True,
    )
    print(f"{args.username} is now {role.value}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from threadline.seed import seed

    settings = load_settings()
    if settings.is_production:
        _fail("seed adds demo users and messages: refused with THREADLINE_ENV=production", 2)
    if settings.is_sqlite:
        _migrate(settings)
    with _database_errors(settings, "seed"):
        print(asyncio.run(seed(settings)))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from threadline.backups import BackupError, NotAFolder, create_backup

    settings = load_settings()
    try:
        path, manifest = asyncio.run(create_backup(settings, args.dir, keep=args.keep))
    except NotAFolder as exc:
        _fail(f"backup: {exc}", 2)  # a wrong argument, like the other usage errors
    except BackupError as exc:
        _fail(f"backup failed: {exc}", 1)
    except OSError as exc:  # the disk is full, a folder cannot be read...
        _fail(f"backup failed: {_os_error(exc)}", 1)
    print(
        f"wrote {path}: database {manifest.database_bytes} bytes, {len(manifest.files)} files "
        f"({manifest.file_bytes} bytes) in {manifest.seconds:.2f} s"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from threadline.backups import BackupError, restore_backup

    try:
        manifest = asyncio.run(restore_backup(load_settings(), args.backup, force=args.force))
    except BackupError as exc:
        _fail(f"restore failed: {exc}", 1)
    except OSError as exc:  # the disk is full, the upload folder cannot be made...
        _fail(f"restore failed: {_os_error(exc)}", 1)
    print(
        f"restored {args.backup} (made {manifest.created_at}): "
        f"{manifest.counts.get('messages', 0)} messages, {len(manifest.files)} files"
    )
    return 0


def _positive(text: str, most: int | None = None) -> int:
    """An argument that must be a whole number from 1 (to ``most``); argparse names it."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if number < 1 or (most is not None and number > most):
        limit = f"from 1 to {most}" if most else "at least 1"
        raise argparse.ArgumentTypeError(f"must be {limit}, not {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="threadline", description="Threadline chat backend")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="serve the API (migrates an embedded SQLite database first)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=partial(_positive, most=65535), default=8000)
    serve.add_argument("--workers", type=_positive, default=1)
    serve.add_argument("--log-level", type=str.lower, default="info", choices=LOG_LEVELS)
    serve.add_argument(
        "--ws-per-message-deflate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="WebSocket compression (off: it costs CPU and memory per connection)",
    )
    serve.add_argument(
        "--ws",
        default=WEBSOCKET_IMPLEMENTATION,
        choices=["websockets-sansio", "websockets", "wsproto"],
        help="uvicorn's WebSocket implementation (default: %(default)s, which needs no"
        " task per connection and writes frames without waiting)",
    )
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="upgrade the database to the newest revision")
    migrate.set_defaults(func=cmd_migrate)

    token = sub.add_parser("token", help="print a development token for USERNAME (created if new)")
    token.add_argument("username")
    token.add_argument("--ttl", type=_positive, default=86400, help="lifetime in seconds")
    token.set_defaults(func=cmd_token)

    users = sub.add_parser("users", help="manage users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    set_role = users_sub.add_parser("set-role", help="set a user's system role")
    set_role.add_argument("username")
    set_role.add_argument("role", choices=["owner", "admin", "member", "OWNER", "ADMIN", "MEMBER"])
    set_role.set_defaults(func=cmd_set_role)

    seed_cmd = sub.add_parser("seed", help="create demo users, threads and messages")
    seed_cmd.set_defaults(func=cmd_seed)

    backup = sub.add_parser(
        "backup", help="write a consistent backup (database and upload files) into DIR"
    )
    backup.add_argument("dir", type=Path)
    backup.add_argument(
        "--keep", type=int, default=7, help="backups to keep in DIR (default: %(default)s)"
    )
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser("restore", help="restore BACKUP into an empty deployment")
    restore.add_argument("backup", type=Path)
    restore.add_argument(
        "--force", action="store_true", help="replace a database or upload folder that has data"
    )
    restore.set_defaults(func=cmd_restore)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:  # a setting found wrong on use: a kept secret, CLERK_JWT_KEY...
        _fail(str(exc), 2)
