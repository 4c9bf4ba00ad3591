"""The /graphql endpoint: strawberry's ASGI view with our context and WebSocket auth.

Over HTTP the Authorization header's token is checked when a field needs it; over
WebSocket the connection_init token is checked at once (a bad one closes with 4403).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from threadline.errors import (
    DomainError,
    RateLimited,
    ServiceUnavailable,
    SignedOut,
    Unauthenticated,
)
from threadline.metrics import WEBSOCKET_CONNECTIONS
from threadline.models import User
from threadline.realtime.channels import SESSIONS_CHANNEL, encode_sessions_signal
from threadline.realtime.rate_limits import Action
from threadline.realtime.sinks import DirectSink
from threadline.resolvers import Mutation, Query
from threadline.runtime import Runtime
from threadline.schema.context import ConnectionState, Context
from threadline.schema.engine.internals import StreamHook
from threadline.schema.errors import shape_error
from threadline.schema.schema import Roots, ThreadlineSchema
from threadline.services import sessions, users
from threadline.services.clerk_sync import Identity
from threadline.subscriptions.broadcast import FrameRenderer
from threadline.subscriptions.live import OperationRoot
from threadline.subscriptions.root import Subscription
from threadline.uploads.multipart import MultipartError, place_files, text_field
from threadline.uvicorn_seam import raw_socket
from threadline.ws_protocol import LegacyProtocol, RefusedConnection, TransportProtocol, formatted

log = logging.getLogger(__name__)

ROOTS = Roots(Query, Mutation, Subscription)

# Either header, non-empty, lets a multipart (upload) request through: see parse_multipart.
CSRF_HEADERS = ("apollo-require-preflight", "x-apollo-operation-name")
CLOSE_SESSION_ENDED = 4401
CLOSE_REFUSED = 4403
CLOSE_TOO_MANY = 4429
# Each socket's token is checked once a beat (see maintain_connections).
BEAT_SECONDS = 8.0
# Leases last three minutes (presence.LEASE_SECONDS): renewing every 64 s survives two misses.
UPKEEP_EVERY = 8
# At 10,000 sockets one burst a beat stalled the event loop (bench.rooms' p99): spread it.
BEAT_TICKS = 8
# graphql-transport-ws sockets get uvicorn's pings instead (cli.WS_PING_SECONDS).
LEGACY_KEEP_ALIVE_SECONDS = 15.0


def _tick_of(item: object) -> int:
    # Mixed, so that neighbouring addresses do not fall on one tick.
    return (hash(item) * 0x9E3779B1 >> 11) % BEAT_TICKS


def origin_of(scope: Scope, host: bytes | None = None) -> str | None:
    """scheme://host of an HTTP or WebSocket request, from its Host header (``host``
    when the caller has read it already)."""
    if host is None:
        host = next((value for name, value in scope["headers"] if name == b"host"), None)
    if host is None:
        server = scope.get("server")
        if not server:
            return None
        host = f"{server[0]}:{server[1]}".encode()
    scheme = {"ws": "http", "wss": "https"}.get(scope["scheme"], scope["scheme"])
    return f"{scheme}://{host.decode('latin-1')}"


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


class TransportWSHandler(TransportProtocol, StreamHook):
    """graphql-transport-ws, with a direct frame sink for broadcast subscriptions: each
    operation's root value is its ``OperationRoot`` (sink and frame renderer)."""

    roots: dict[Operation[Context, None], OperationRoot] | None = None

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        # No timeout on these writes: the fan-out bounds a write that has to wait.
        websocket = self.context.connection
        sink = DirectSink(operation, websocket.send_text, raw_socket(websocket.scope))
        root = OperationRoot(sink, self.view.frames)  # type: ignore[attr-defined]
        if self.roots is None:
            self.roots = {}
        self.roots[operation] = root
        # strawberry reads it before its first await: each operation gets its own.
        self.root_value = root  # type: ignore[assignment]
        try:
            await super().run_operation(operation)
        finally:
            self.before_stream(operation)

    def before_stream(self, operation: Operation[Context, None]) -> OperationRoot | None:
        # Runs as results start (the execution has its root value by now) and at the end:
        # an idle subscription keeps only its fan-out member.
        root = self.roots.pop(operation, None) if self.roots is not None else None
        if not self.roots:
            self.roots = None
        if root is not None and self.root_value is root:
            self.root_value = None
        return root

    async def after_stream(
        self, operation: Operation[Context, None], result_source: Any, kept: Any
    ) -> None:
        sink = kept.sink if isinstance(kept, OperationRoot) else None
        if sink is None or sink.detached is None:
            return
        # The resolver detached: free the GraphQL stream's state, run the rest in this task.
        await result_source.aclose()
        rest, sink.detached = sink.detached, None
        try:
            await rest()
        except DomainError as exc:
            await operation.send_operation_message(
                {"id": operation.id, "type": "error", "payload": [formatted(exc)]}
            )
        except (WebSocketDisconnected, WebSocketDisconnect):
            pass  # a frame the closed socket refused: the end, as on the general path
        finally:
            for release in sink.on_end:
                release()


class RefusedUpload(Exception):
    """A multipart request refused before its body is read; answered GraphQL-shaped."""

    def __init__(self, error: DomainError) -> None:
        super().__init__(error.message)
        self.error = error


class ThreadlineGraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyProtocol

    def __init__(self, schema: ThreadlineSchema, runtime: Runtime) -> None:
        super().__init__(
            schema,
            graphql_ide=None if runtime.settings.is_production else "graphiql",
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            connection_init_wait_timeout=timedelta(seconds=10),
            keep_alive=True,  # the legacy graphql-ws protocol's "ka" messages
            keep_alive_interval=LEGACY_KEEP_ALIVE_SECONDS,
            # The app refuses the 101st subscription with a coded error; this is a backstop.
            max_subscriptions_per_connection=runtime.settings.max_subscriptions_per_connection + 10,
            allowed_origins=runtime.settings.cors_origins,
            multipart_uploads_enabled=True,
        )
        self.runtime = runtime
        # Renders broadcast subscription frames once per event (see subscriptions.live).
        self.frames = FrameRenderer(lambda: Context(runtime=runtime), schema.runner)
        runtime.presence.on_reaped = self._close_reaped_sessions
        # Live sockets by their WebSocket, and the same split over the beat's ticks.
        self.connections: dict[object, Context] = {}
        self._ticks: list[dict[object, Context]] = [{} for _ in range(BEAT_TICKS)]
        self._closing: set[asyncio.Task[None]] = set()

    def decode_json(self, data: str | bytes) -> object:
        # orjson is several times faster; it refuses lone surrogate escapes and NaN.
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(data)
        try:
            return json.loads(data)
        # The view answers a JSONDecodeError with 400: so too a body too deep or not UTF-8.
        except json.JSONDecodeError:
            raise
        except (ValueError, RecursionError) as error:
            raise json.JSONDecodeError(f"unreadable JSON ({type(error).__name__})", "", 0) from None

    def parse_json(self, data: str | bytes) -> Any:
        # strawberry reads fields off whatever a body decodes to: a bare null or 5 was a 500.
        if not isinstance(parsed := super().parse_json(data), dict | list):
            raise HTTPException(400, "A JSON body, `operations` or `map` must be an object")
        return parsed

    def encode_json(self, data: object) -> str:
        # Text: strawberry sends bytes as binary frames, which graphql-ws clients do not read.
        return self.encode_json_bytes(data).decode()

    def encode_json_bytes(self, data: object) -> bytes:
        # orjson is several times faster; it cannot write a lone surrogate (in an error).
        try:
            return orjson.dumps(data)
        except orjson.JSONEncodeError:
            return json.dumps(data, separators=(",", ":")).encode()

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        # Errors raised before the operation starts (syntax, token limit) skip the extensions.
        if result.errors:
            result.errors = [
                e if e.extensions and "code" in e.extensions else shape_error(e)
                for e in result.errors
            ]
        return await super().process_result(request, result)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        user_agent, origin = request.headers.get("user-agent"), origin_of(request.scope)
        if isinstance(request, WebSocket):
            return Context(
                runtime=self.runtime, user_agent=user_agent, origin=origin, connection=request
            )
        return self.http_context(request.headers.get("authorization"), user_agent, origin)

    def http_context(
        self, authorization: str | None, user_agent: str | None, origin: str | None = None
    ) -> Context:
        return Context(
            runtime=self.runtime, token=bearer(authorization), user_agent=user_agent, origin=origin
        )

    async def parse_multipart(self, request: AsyncHTTPRequestAdapter) -> dict[str, str]:
        # Browsers send a multipart form cross-site without a preflight; a custom header
        # forces one (CORS decides), as in Apollo Server. Checked before the body is read.
        if not any(request.headers.get(name, "").strip() for name in CSRF_HEADERS):
            raise HTTPException(
                400,
                "This multipart request needs a non-empty `Apollo-Require-Preflight` "
                "or `X-Apollo-Operation-Name` header (CSRF protection)",
            )
        # Only signed-in users upload: a refused caller's body is never read (nor spooled).
        token = bearer(request.headers.get("authorization"))
        try:
            if token is None:
                raise Unauthenticated("Sign in: send `Authorization: Bearer <token>`")
            await self.runtime.authenticate(token)
        except DomainError as exc:  # UNAUTHENTICATED; SERVICE_UNAVAILABLE from storage
            raise RefusedUpload(exc) from None
        except Exception as exc:  # the database is unreachable: nothing to do with the body
            log.warning("checking an upload's token failed: %s", type(exc).__name__)
            unavailable = ServiceUnavailable("Uploads are unavailable right now; try again shortly")
            raise RefusedUpload(unavailable) from None
        try:
            form_data = await request.get_form_data()
        except ValueError as e:
            raise HTTPException(400, "Unable to parse the multipart body") from e
        # strawberry's own placing crashes on a map that is not the spec's (HTTP 500).
        try:
            operations = self.parse_json(text_field(form_data.form, "operations"))
            files_map = self.parse_json(text_field(form_data.form, "map"))
            return place_files(operations, files_map, form_data.files)  # type: ignore[no-any-return]
        except MultipartError as exc:
            raise HTTPException(400, str(exc)) from None

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        token = token_from_params(context.connection_params)
        # Nothing else reads the payload, and a live socket would keep it (a JWT, ~1 KB).
        context.connection_params = None
        if token is None:
            raise ConnectionRejectionError({"message": "Sign in: send a token in connection_init"})
        forgotten = self.runtime.viewers_forgotten
        identity, user = await self._authenticated(token)
        try:
            await self.runtime.rate_limiter.hit(Action.WS_CONNECT, str(user.id))
        except RateLimited:
            # Closed by the protocol handler, once, with this code.
            raise RefusedConnection(CLOSE_TOO_MANY, "Too many new connections") from None
        raw = raw_socket(context.connection.scope)
        if raw is not None:
            raw.forget_handshake()
        context.token = token
        context.set_viewer(identity, user)
        session_id = await sessions.open_session(
            self.runtime.db, user, identity.session_id, context.user_agent
        )
        # Named after the session row, so that reaping the lease closes it (_close_reaped_sessions).
        state = ConnectionState(session_id.hex, session_id)
        context.state = state
        # Registered before anything else can fail: run's finally closes the session row.
        self.connections[context.connection] = context
        self._ticks[_tick_of(state.connection_id)][context.connection] = context
        WEBSOCKET_CONNECTIONS.set(len(self.connections))
        if self.runtime.viewers_forgotten != forgotten:
            # A role change signalled before this socket was listed did not close it:
            # the viewer it was authorized with may be older than the change.
            identity, user = await self._authenticated(token)
            context.set_viewer(identity, user)
        # Never fails for want of Redis: the lease is then written on the next beat.
        await self.runtime.presence.renew(user.id, state.connection_id)
        return None

    async def _authenticated(self, token: str) -> tuple[Identity, User]:
        """The token's viewer, or the refusal a graphql-ws client acts on: 4401 when no
        fresh token will do (the session ended, the user was deleted), else 4403."""
        try:
            return await self.runtime.authenticate(token)
        except SignedOut as exc:
            raise RefusedConnection(CLOSE_SESSION_ENDED, exc.message) from None
        except Unauthenticated as exc:
            raise ConnectionRejectionError({"message": exc.message}) from None

    async def maintain_connections(self) -> None:
        """Runs for the process's lifetime: each beat, close sockets whose token is stale;
        every UPKEEP_EVERY beats renew their leases and touch their session rows.
        One loop, not a task per socket: 10,000 idle sockets cost a few round trips."""
        tick = 0
        while True:
            await asyncio.sleep(BEAT_SECONDS / BEAT_TICKS)
            tick += 1
            beat, part = divmod(tick, BEAT_TICKS)
            upkeep = beat % UPKEEP_EVERY == 0
            try:
                await self._maintain(part, renew=upkeep, touch_sessions=upkeep)
            except Exception:
                log.warning("connection maintenance failed; retrying next beat", exc_info=True)

    async def _maintain(
        self, part: int | None = None, *, renew: bool = True, touch_sessions: bool
    ) -> None:
        """The beat's work for the sockets of one tick (``part``), or for all of them."""
        runtime = self.runtime
        now = datetime.now(UTC)
        leases: list[tuple[uuid.UUID, str]] = []
        session_ids: list[uuid.UUID] = []
        roles: dict[uuid.UUID, tuple[str, str]] = {}  # user -> (role, Clerk id) as connected
        sockets = self.connections if part is None else self._ticks[part]
        for context in list(sockets.values()):
            state, identity, user = context.state, context.identity, context.viewer_or_none
            if state is None or identity is None or user is None:
                continue
            if (now - identity.expires_at).total_seconds() > runtime.settings.ws_reauth_seconds:
                # Not awaited here: one slow peer must not hold up the others' leases.
                reason = "Token expired: reconnect with a fresh one"
                state.tasks.append(asyncio.create_task(self._close(context, CLOSE_REFUSED, reason)))
                continue
            leases.append((user.id, state.connection_id))
            roles[user.id] = (user.role, identity.clerk_id)
            if state.session_id is not None:
                session_ids.append(state.session_id)
        if renew:
            await runtime.presence.renew_many(leases)
        if touch_sessions and session_ids:
            await sessions.touch_sessions(runtime.db, session_ids)
        if touch_sessions and roles:
            # A role change or a deletion reaches sockets by a signal through Redis, which a
            # failed publish, a reconnecting listener or a command run without REDIS_URL
            # loses: each upkeep compares its sockets' users with the database too.
            found = await users.standing(runtime.db, roles)
            changed = {u: got for u, (role, _) in roles.items() if (got := found.get(u)) != role}
            self._reauthorize([str(u) for u, got in changed.items() if got is not None])
            if deleted := [roles[u][1] for u, got in changed.items() if got is None]:
                # Only then: forgetting viewers makes each socket opening now authenticate again.
                self._close_sessions([], deleted)

    async def _disconnected(self, websocket: object) -> None:
        context = self.connections.pop(websocket, None)
        if context is None:
            return
        WEBSOCKET_CONNECTIONS.set(len(self.connections))
        state, user = context.state, context.viewer_or_none
        if state is None:
            return
        self._ticks[_tick_of(state.connection_id)].pop(websocket, None)
        if user is None:
            return
        for task in state.tasks:
            task.cancel()
        # The session row first, on its own: it must close whatever presence does.
        try:
            if state.session_id is not None:
                await sessions.close_sessions(self.runtime.db, [state.session_id])
        except Exception:
            log.warning("closing a connection's session failed", exc_info=True)
        try:
            await self.runtime.presence.release(user.id, state.connection_id)
        except Exception:
            log.warning("releasing a connection's presence failed", exc_info=True)

    async def _close_reaped_sessions(self, connection_ids: Sequence[str]) -> None:
        """Close the session rows of a killed process's sockets (its leases were reaped)."""
        ids = []
        for connection_id in connection_ids:
            with contextlib.suppress(ValueError):
                ids.append(uuid.UUID(hex=connection_id))
        if ids:
            await sessions.close_sessions(self.runtime.db, ids)

    async def run(self, request: Any, context: Any = None, root_value: Any = None) -> Any:
        try:
            return await super().run(
                request,
                context=UNSET if context is None else context,
                root_value=UNSET if root_value is None else root_value,
            )
        except RefusedUpload as refused:
            body = self.encode_json_bytes({"data": None, "errors": [formatted(refused.error)]})
            # The body still coming is not read: the connection closes after the answer.
            return Response(body, media_type="application/json", headers={"connection": "close"})
        finally:
            if isinstance(request, Request):
                # An upload's spooled files go now: a file may fill several variables.
                await request.close()
            if isinstance(request, WebSocket):
                await self._disconnected(request)

    async def end_sessions(self, clerk_session_ids: list[str], clerk_user_ids: list[str]) -> None:
        """Tell every process to close these sessions' sockets (the webhook's hook)."""
        # This process forgets them before the webhook answers: read-your-writes.
        self.runtime.forget_viewers(clerk_user_ids, clerk_session_ids)
        message = encode_sessions_signal(clerk_session_ids, clerk_user_ids)
        try:
            await self.runtime.broker.publish(SESSIONS_CHANNEL, message)
        except Exception:
            log.warning("could not broadcast ended sessions; closing local ones", exc_info=True)
            self._close_sessions(clerk_session_ids, clerk_user_ids)

    async def listen_for_ended_sessions(self) -> None:
        """Runs for the process's lifetime: closes local sockets of sessions ended anywhere."""
        while True:
            try:
                async with self.runtime.broker.subscribe(SESSIONS_CHANNEL) as subscriber:
                    async for item in subscriber:
                        if isinstance(item, str):
                            data = orjson.loads(item)
                            self._close_sessions(data["sessions"], data["users"])
                            self._reauthorize(data.get("reauthorize", []))
            except Exception:
                log.warning("ended-sessions listener restarting", exc_info=True)
                await asyncio.sleep(1)

    def _close_sessions(self, clerk_session_ids: list[str], clerk_user_ids: list[str]) -> None:
        """Close the live sockets of ended Clerk sessions and deleted users (4401)."""
        self.runtime.forget_viewers(clerk_user_ids, clerk_session_ids)

        def ended(c: Context) -> bool:
            identity = c.identity
            return identity is not None and (
                identity.session_id in clerk_session_ids or identity.clerk_id in clerk_user_ids
            )

        self._close_where(ended, CLOSE_SESSION_ENDED, "Session ended")

    def _reauthorize(self, user_ids: list[str]) -> None:
        """Close these users' live sockets with 4403: their role changed, and what a socket
        runs was decided with the old one; on reconnecting every stream is checked anew."""
        if not user_ids:
            return
        ids = {uuid.UUID(user_id) for user_id in user_ids}
        self.runtime.forget_viewers(user_ids=ids)
        self._close_where(
            lambda c: c.viewer_or_none is not None and c.viewer_or_none.id in ids,
            CLOSE_REFUSED,
            "Your role changed: reconnect",
        )

    def _close_where(self, doomed: Callable[[Context], bool], code: int, reason: str) -> None:
        # Not awaited: a close waits until its socket drains (a client that stopped reading
        # holds it until the keep-alive gives up), and would hold up every other close.
        for context in [c for c in list(self.connections.values()) if doomed(c)]:
            task = asyncio.create_task(self._close(context, code, reason))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close(self, context: Context, code: int, reason: str) -> None:
        try:
            await context.connection.close(code=code, reason=reason)
        except Exception:  # already gone
            log.debug("socket already closed", exc_info=True)

    async def close_connections(self) -> None:
        self._close_where(lambda _: True, 1001, "Server shutting down")
        await asyncio.gather(*self._closing)
