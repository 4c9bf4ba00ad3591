"""POST /graphql: a JSON operation that wants one JSON answer runs here, with the view's
context, runner and encoding; anything else goes to the view, its body replayed.

Strawberry's view builds a Request, an adapter, a sub-response and a Response for each
request: over a third of a small request's CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import Message, Receive, Scope, Send
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from threadline.graphql_app import origin_of
from threadline.http_limits import respond
from threadline.schema.engine.internals import handle_errors

if TYPE_CHECKING:
    from threadline.graphql_app import ThreadlineGraphQL

JSON_HEADERS = [(b"content-type", b"application/json")]
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]


def request_data_from_json(data: object) -> GraphQLRequestData | None:
    """One operation from a decoded JSON body, or None when it is not one."""
    if not isinstance(data, dict):
        return None
    query, variables = data.get("query"), data.get("variables")
    name, extensions = data.get("operationName"), data.get("extensions")
    if (
        isinstance(query, str | None)
        and isinstance(variables, dict | None)
        and isinstance(name, str | None)
        and isinstance(extensions, dict | None)
    ):
        return GraphQLRequestData(query, variables, name, extensions, "http")
    return None


class GraphQLPost:
    """The ASGI endpoint of POST /graphql: JSON operations here, the rest to ``view``."""

    def __init__(self, view: ThreadlineGraphQL) -> None:
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        view = self.view
        headers: dict[bytes, bytes] = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"")
        accept = headers.get(b"accept", b"")
        # A JSON body, and no multipart (incremental delivery) or event-stream answer.
        if not (
            (content_type == b"application/json" or content_type.startswith(b"application/json;"))
            and b"multipart/" not in accept
            and b"text/event-stream" not in accept
        ):
            await view(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        try:
            request_data = request_data_from_json(view.decode_json(body))
        except ValueError:  # not JSON: the view answers that
            request_data = None
        if request_data is None:
            await view(scope, _replay(body, receive), send)
            return
        context = view.http_context(
            headers.get(b"authorization", b"").decode("latin-1") or None,
            headers.get(b"user-agent", b"").decode("latin-1") or None,
            origin_of(scope, headers.get(b"host")),
        )
        try:
            result = await view.schema.execute(
                request_data.query,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                # None: every kind, as over POST (a subscription gets the runner's refusal).
                allowed_operation_types=None,
                operation_extensions=request_data.extensions,
            )
        # The view's plain-text 400s, worded as it words them.
        except CannotGetOperationTypeError as exc:
            await respond(send, 400, exc.as_http_error_reason().encode(), _TEXT_HEADERS)
        except InvalidOperationTypeError as exc:
            await respond(send, 400, exc.as_http_error_reason("POST").encode(), _TEXT_HEADERS)
        except MissingQueryError:
            await respond(send, 400, b"No GraphQL query found in the request", _TEXT_HEADERS)
        else:
            response = await view.process_result(None, result)  # type: ignore[arg-type]
            if result.errors:
                handle_errors(view, result.errors, response)
            await respond(send, 200, view.encode_json_bytes(response), JSON_HEADERS)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    first: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def again() -> Message:
        return first.pop() if first else await receive()

    return again
