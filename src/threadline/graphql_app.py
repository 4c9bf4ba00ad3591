"""The /graphql endpoint: strawberry's ASGI view with our context and WebSocket auth.

Over HTTP the bearer token comes from the Authorization header and is checked
when a field needs it. Over WebSocket it comes from the connection_init payload
and is checked at once: a bad one closes the socket with 4403 before any
operation runs.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import strawberry
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types.unset import UnsetType

from threadline.errors import Unauthenticated
from threadline.metrics import WEBSOCKET_CONNECTIONS
from threadline.realtime.rate_limits import MAX_SUBSCRIPTIONS_PER_CONNECTION
from threadline.runtime import Runtime
from threadline.schema.context import Context

log = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401
CLOSE_REFUSED = 4403


def bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def token_from_params(params: Any) -> str | None:
    if not isinstance(params, dict):
        return None
    token = params.get("token")
    if isinstance(token, str) and token.strip():
        return token.strip()
    auth = params.get("authorization") or params.get("Authorization")
    return bearer(auth) if isinstance(auth, str) else None


class ThreadlineGraphQL(GraphQL[Context, None]):
    def __init__(self, schema: strawberry.Schema, runtime: Runtime) -> None:
        super().__init__(
            schema,
            graphql_ide=None if runtime.settings.is_production else "graphiql",
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            connection_init_wait_timeout=timedelta(seconds=10),
            # The app refuses the 101st subscription with a coded error; this is a backstop.
            max_subscriptions_per_connection=MAX_SUBSCRIPTIONS_PER_CONNECTION + 10,
            allowed_origins=runtime.settings.cors_origins,
        )
        self.runtime = runtime
        self.connections: set[Context] = set()

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        if isinstance(request, WebSocket):
            return Context(
                runtime=self.runtime,
                user_agent=request.headers.get("user-agent"),
                connection=request,
            )
        return Context(
            runtime=self.runtime,
            token=bearer(request.headers.get("authorization")),
            user_agent=request.headers.get("user-agent"),
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        token = token_from_params(context.connection_params)
        if token is None:
            raise ConnectionRejectionError({"message": "Sign in: send a token in connection_init"})
        try:
            identity, user = await self.runtime.authenticate(token)
        except Unauthenticated as exc:
            raise ConnectionRejectionError({"message": exc.message}) from None
        context.token = token
        context.set_viewer(identity, user)
        self.connections.add(context)
        WEBSOCKET_CONNECTIONS.set(len(self.connections))
        return None

    async def run(self, request: Any, context: Any = None, root_value: Any = None) -> Any:
        from strawberry.types.unset import UNSET

        try:
            return await super().run(
                request,
                context=UNSET if context is None else context,
                root_value=UNSET if root_value is None else root_value,
            )
        finally:
            if isinstance(request, WebSocket):
                for ctx in [c for c in self.connections if c.connection is request]:
                    self.connections.discard(ctx)
                WEBSOCKET_CONNECTIONS.set(len(self.connections))

    async def end_sessions(self, clerk_session_ids: list[str], clerk_user_ids: list[str]) -> None:
        """Close the live sockets of ended Clerk sessions and deleted users (4401)."""
        self.runtime.forget_viewers(clerk_user_ids, clerk_session_ids)
        doomed = [
            c
            for c in list(self.connections)
            if c.identity is not None
            and (
                c.identity.session_id in clerk_session_ids or c.identity.clerk_id in clerk_user_ids
            )
        ]
        await asyncio.gather(
            *(self._close(c, CLOSE_SESSION_ENDED, "Session ended") for c in doomed)
        )

    async def _close(self, context: Context, code: int, reason: str) -> None:
        self.connections.discard(context)
        WEBSOCKET_CONNECTIONS.set(len(self.connections))
        try:
            await context.connection.close(code=code, reason=reason)
        except Exception:  # already gone
            log.debug("socket already closed", exc_info=True)

    async def close_connections(self) -> None:
        await asyncio.gather(
            *(self._close(c, 1001, "Server shutting down") for c in list(self.connections))
        )
