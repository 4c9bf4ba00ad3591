"""create_app(settings): the one ASGI app with its routes, lifespan and middleware."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from threadline.auth.webhooks import clerk_webhook
from threadline.config import ConfigError, Settings
from threadline.downloads import download, preview
from threadline.gc_pacing import Pacer
from threadline.graphql_app import CSRF_HEADERS, ROOTS, ThreadlineGraphQL
from threadline.graphql_post import GraphQLPost
from threadline.http_limits import BodyLimits
from threadline.metrics import watch_gc_pauses
from threadline.runtime import Runtime
from threadline.schema.schema import build_schema
from threadline.services import retention
from threadline.strict_transport import StrictTransport
from threadline.uploads.storage import unfinished_restore
from threadline.uvicorn_seam import RawSocketMiddleware
from threadline.web_routes import web_routes

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    # Anyone may ask: what went wrong (hosts, driver messages) goes to the log only.
    from threadline.migrate import schema_problem  # alembic: loaded on first use

    runtime: Runtime = request.app.state.runtime
    try:
        # A round trip that also says whether the schema is one this code can use.
        problem = schema_problem(await runtime.db.schema_revision())
    except Exception as exc:
        problem = f"the database is down: {_without_credentials(exc)}"
    checks = {"database": "ok" if problem is None else "down"}
    if problem is not None:
        log.warning("readiness: %s", problem)
    if runtime.settings.redis_url:
        checks["redis"] = "ok" if runtime.broker.is_healthy else "down"
        if checks["redis"] == "down":
            detail = runtime.broker.health().get("last_error")
            log.warning("readiness: Redis is down: %s", _without_credentials(detail))
    ok = "down" not in checks.values()
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503
    )


def _without_credentials(detail: object) -> str:
    """A failure's description for the log, with any user:password@ of a URL masked."""
    if isinstance(detail, BaseException):
        detail = f"{type(detail).__name__}: {detail}"
    return re.sub(r"://[^/@\s]*@", "://***@", str(detail))


async def metrics(request: Request) -> Response:
    return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)


@asynccontextmanager
async def metrics_listener(settings: Settings) -> AsyncIterator[None]:
    """/metrics on a port of its own while the app runs, when METRICS names one."""
    httpd = None
    if settings.metrics_address is not None:
        host, port = settings.metrics_address
        try:
            httpd, _ = start_http_server(port, addr=host)
        except OSError as exc:
            # With --workers N the first process holds the port; the others serve on.
            log.warning("metrics not served on %s:%s: %s", host, port, exc.strerror)
    try:
        yield
    finally:
        if httpd is not None:
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()


def create_app(settings: Settings) -> Starlette:
    settings.check()
    try:  # else the server looks ready and every upload fails
        settings.upload_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"UPLOAD_DIR {settings.upload_dir}: {exc.strerror}") from None
    # Here, so that every way of serving refuses: exit 3, which supervisors do not restart.
    if problem := unfinished_restore(settings.upload_dir):
        print(f"threadline: {problem}", file=sys.stderr)
        raise SystemExit(3)
    runtime = Runtime(settings)
    schema = build_schema(ROOTS, settings)
    graphql = ThreadlineGraphQL(schema, runtime)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        watch_gc_pauses()
        background = [
            asyncio.create_task(Pacer().run()),
            asyncio.create_task(graphql.listen_for_ended_sessions()),
            asyncio.create_task(graphql.maintain_connections()),
            asyncio.create_task(retention.sweep_forever(runtime.db, runtime.storage)),
            asyncio.create_task(runtime.presence.keep_alive()),
        ]
        try:
            async with metrics_listener(settings):
                yield
        finally:
            for task in background:
                task.cancel()
            # Bounded: a cancellation swallowed inside a driver must not hang shutdown.
            await asyncio.wait(background, timeout=5)
            await graphql.close_connections()
            await runtime.stop()

    # FAST_PATHS=off: no raw socket, every live frame goes through the ASGI send.
    middleware = [Middleware(RawSocketMiddleware)] if settings.fast_paths else []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["authorization", "content-type", *CSRF_HEADERS],
                allow_credentials=True,
            )
        )
    # Inside CORS only, so that browsers can read its 413 and 408 answers.
    middleware.append(
        Middleware(
            BodyLimits,
            max_request_bytes=settings.max_request_bytes,
            max_upload_bytes=settings.max_upload_bytes,
            body_timeout_seconds=settings.http_body_timeout_seconds,
            body_min_bytes_per_second=settings.http_body_min_bytes_per_second,
        )
    )
    app = Starlette(
        routes=[
            # JSON operations run on the POST endpoint; it hands the rest to the view.
            Route("/graphql", GraphQLPost(graphql), methods=["POST"]),
            Route("/graphql", graphql, methods=["GET"]),
            WebSocketRoute("/graphql", graphql),
            Route("/webhooks/clerk", clerk_webhook, methods=["POST"]),
            Route("/attachments/{attachment_id}/{filename}", download, methods=["GET", "HEAD"]),
            Route("/previews/{attachment_id}", preview, methods=["GET", "HEAD"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *([Route("/metrics", metrics)] if settings.metrics_on_app else []),
            *web_routes(settings),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    if settings.hsts_seconds:
        # Around Starlette's outermost middleware too, which sends the 500s.
        app.middleware_stack = StrictTransport(app.build_middleware_stack(), settings.hsts_seconds)
    app.state.runtime = runtime
    app.state.on_sessions_ended = graphql.end_sessions
    app.state.graphql = graphql
    return app
