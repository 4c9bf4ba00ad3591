"""Both WebSocket subprotocols held to the contract at their edges, where strawberry
lets some client mistakes crash the socket or refuses with codes of its own.

Both close a refused connection once, with the refusal's code (4403, 4429), and a
malformed operation message with 4400; an operation past the per-connection ceiling gets
RATE_LIMITED. The legacy graphql-ws gets the connection_init deadline (4408) too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from contextlib import suppress
from typing import Any

from graphql import GraphQLError, GraphQLFormattedError
from starlette.websockets import WebSocketDisconnected as ClosedForSending
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.unset import UnsetType

from threadline.errors import DomainError, RateLimited
from threadline.schema.context import Context
from threadline.schema.errors import shape_error

log = logging.getLogger(__name__)

CLOSE_BAD_MESSAGE = 4400
CLOSE_REFUSED = 4403
CLOSE_INIT_TIMEOUT = 4408


class RefusedConnection(ConnectionRejectionError):
    """A refusal at connection_init that closes with a code of its own (4429, ...)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__({"message": reason})
        self.code = code
        self.reason = reason


def malformed(message: Any, start: str, stop: str) -> str | None:
    """Why ``message`` is not well-formed (None if it is): an object with a type; for the
    ``start`` and ``stop`` of an operation an id; for ``start`` a GraphQL request."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "A message must be an object with a type"
    kind = message["type"]
    if kind != start and kind != stop:
        return None
    op_id = message.get("id")
    if not isinstance(op_id, str) or not op_id:
        return "The operation id must be a non-empty string"
    if kind == stop:
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return "The payload must be an object with a query"
    if not isinstance(payload.get("query"), str):
        return "The payload's query must be a string"
    for key, kind in (("variables", dict), ("operationName", str), ("extensions", dict)):
        if payload.get(key) is not None and not isinstance(payload[key], kind):
            return f"The payload's {key} must be {'an object' if kind is dict else 'a string'}"
    return None


def over_the_limit(
    handler: TransportProtocol | LegacyProtocol, operation_id: object, running: Collection[object]
) -> GraphQLFormattedError | None:
    """The coded error when a new operation (an id not running yet) would pass the
    connection's ceiling (strawberry's own refusal carries no code)."""
    limit = handler.max_subscriptions_per_connection
    if not handler.connection_acknowledged or operation_id in running:
        return None
    if limit is None or len(running) < limit:
        return None
    return formatted(RateLimited(f"At most {limit} operations at once on one connection", 1))


def formatted(error: DomainError) -> GraphQLFormattedError:
    return shape_error(GraphQLError(error.message, original_error=error)).formatted


async def acknowledged(handler: TransportProtocol | LegacyProtocol, payload: Any) -> bool:
    """Both subprotocols' answer to connection_init: the acknowledgement (with the payload
    ``on_ws_connect`` gave, if any), or a close with the refusal's code."""
    handler.context.connection_params = payload
    try:
        ack = await handler.view.on_ws_connect(handler.context)
    except ConnectionRejectionError as exc:
        if isinstance(handler, LegacyProtocol):
            await handler.send_message({"type": "connection_error", "payload": exc.payload})
        refusal = exc if isinstance(exc, RefusedConnection) else None
        code, reason = (refusal.code, refusal.reason) if refusal else (CLOSE_REFUSED, "Forbidden")
        await handler.websocket.close(code, reason)
        return False
    message: dict[str, object] = {"type": "connection_ack"}
    if not isinstance(ack, UnsetType) and ack is not None:
        message["payload"] = ack
    await handler.send_message(message)  # type: ignore[arg-type]
    handler.connection_acknowledged = True
    return True


class TransportProtocol(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws (the graphql-ws library, Apollo Client 3+, urql)."""

    async def handle_message(self, message: Any) -> None:
        reason = malformed(message, "subscribe", "complete")
        if reason is not None:
            await self.handle_invalid_message(reason)
            return
        await super().handle_message(message)

    async def send_message(self, message: Any) -> None:
        # The server's own close can come between an operation's end and its `complete`:
        # starlette then refuses the send with an error strawberry does not expect. The
        # message has nowhere to go; the socket's end cleans up. A result that did not go
        # out ends its stream (StreamHook): resumed, the stream would count it delivered.
        try:
            await super().send_message(message)
        except (ClosedForSending, WebSocketDisconnected):
            if message["type"] == "next":
                raise WebSocketDisconnected from None

    def forget_id(self, id: str) -> None:
        # strawberry's raises when the client's `complete` came just before the last message.
        self.operations.pop(id, None)

    async def handle_connection_init(self, message: Any) -> None:
        # strawberry's, except that a refusal closes once, with the refusal's code.
        if self.connection_timed_out:
            return
        if self.connection_init_timeout_task:
            self.connection_init_timeout_task.cancel()
        payload = message.get("payload", {})
        if not isinstance(payload, dict):
            await self.websocket.close(code=CLOSE_BAD_MESSAGE, reason="Invalid payload")
            return
        if self.connection_init_received:
            await self.websocket.close(code=4429, reason="Too many initialisation requests")
            return
        self.connection_init_received = True
        await acknowledged(self, payload)

    async def handle_subscribe(self, message: Any) -> None:
        error = over_the_limit(self, message["id"], self.operations)
        if error is not None:
            await self.send_message({"id": message["id"], "type": "error", "payload": [error]})
            return
        await super().handle_subscribe(message)


class LegacyProtocol(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws subprotocol (subscriptions-transport-ws)."""

    connection_init_received = False

    async def handle(self) -> None:
        # strawberry's, except that a socket without connection_init in time closes (else
        # it is held for ever) and a frame that is not JSON text closes with 4400.
        deadline = asyncio.create_task(self._close_without_init())
        try:
            try:
                async for message in self.websocket.iter_json():
                    await self.handle_message(message)
            except NonTextMessageReceived:
                await self.websocket.close(CLOSE_BAD_MESSAGE, "WebSocket message type must be text")
            except NonJsonMessageReceived:
                await self.websocket.close(
                    CLOSE_BAD_MESSAGE, "WebSocket message must be valid JSON"
                )
        except WebSocketDisconnected:
            pass
        finally:
            for task in (deadline, self.keep_alive_task):
                if task is not None:
                    task.cancel()
                    with suppress(BaseException):
                        await task
            await self.cleanup()

    async def _close_without_init(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_init_received:
            with suppress(Exception):  # the peer may be gone already
                await self.websocket.close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")

    async def handle_message(self, message: Any) -> None:
        reason = malformed(message, "start", "stop")
        if reason is not None:
            await self.websocket.close(CLOSE_BAD_MESSAGE, reason)
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: Any) -> None:
        # strawberry's, except that a refusal closes with 4403 (or its own code), not 1011,
        # and a second connection_init closes the socket: each would open another session
        # row and lease, and the socket's end closes only the last.
        if self.connection_init_received:
            await self.websocket.close(4429, "Too many initialisation requests")
            return
        self.connection_init_received = True  # before the token check, which may be slow
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            await self.send_message({"type": "connection_error"})
            await self.websocket.close(CLOSE_BAD_MESSAGE, "Invalid payload")
            return
        if await acknowledged(self, payload) and self.keep_alive:
            self.keep_alive_task = asyncio.create_task(self.handle_keep_alive())

    async def cleanup_operation(self, operation_id: str) -> None:
        # strawberry's closes the stream, then cancels its task: a send that completes
        # while the close waits resumes the closing stream, and the task dies unseen
        # ("already running") without its `complete`. Here the task ends first.
        source = self.subscriptions.pop(operation_id, None)
        task = self.tasks.pop(operation_id, None)
        if task is not None:
            task.cancel()
            with suppress(BaseException):
                await task
        if source is not None:
            await source.aclose()

    async def handle_start(self, message: Any) -> None:
        error = over_the_limit(self, message["id"], self.tasks)
        if error is not None:
            await self.send_message({"type": "error", "id": message["id"], "payload": error})
            return
        await super().handle_start(message)
