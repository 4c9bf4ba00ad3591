"""create_app(settings): the one ASGI app with its routes, lifespan and middleware."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from threadline.auth.webhooks import clerk_webhook
from threadline.config import Settings
from threadline.graphql_app import ThreadlineGraphQL
from threadline.graphql_post import GraphQLPost
from threadline.runtime import Runtime
from threadline.schema.schema import build_schema
from threadline.subscriptions.raw_frames import RawSocketMiddleware
from threadline.web_routes import web_routes

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    checks: dict[str, Any] = {}
    ok = True
    try:
        await runtime.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        ok = False
        checks["database"] = f"down: {type(exc).__name__}"
    if runtime.settings.redis_url:
        health = runtime.broker.health()
        checks["redis"] = "ok" if runtime.broker.is_healthy else f"down: {health.get('last_error')}"
        ok = ok and runtime.broker.is_healthy
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503
    )


async def metrics(request: Request) -> Response:
    return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings) -> Starlette:
    settings.check()
    runtime = Runtime(settings)
    schema = build_schema(production=settings.is_production)
    graphql = ThreadlineGraphQL(schema, runtime)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        # What start-up built (modules, the schema, pools) lives as long as the
        # process: out of the collector's sight, so collections only walk what
        # requests allocate.
        gc.collect()
        gc.freeze()
        background = [
            asyncio.create_task(graphql.listen_for_ended_sessions()),
            asyncio.create_task(graphql.maintain_connections()),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            # Bounded: a cancellation swallowed inside a driver must not hang shutdown.
            await asyncio.wait(background, timeout=5)
            await graphql.close_connections()
            await runtime.stop()

    middleware = [Middleware(RawSocketMiddleware)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=[
                    "authorization",
                    "content-type",
                    "apollo-require-preflight",
                    "x-apollo-operation-name",
                ],
                allow_credentials=True,
            )
        )
    middleware.append(Middleware(GraphQLPost, view=graphql, known=schema.known_operations))
    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/webhooks/clerk", clerk_webhook, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            *web_routes(settings),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.db = runtime.db
    app.state.on_sessions_ended = graphql.end_sessions
    app.state.graphql = graphql
    return app
