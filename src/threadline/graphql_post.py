"""JSON POSTs to /graphql, the requests nearly every client sends, answered directly.

Strawberry's view serves every kind of request (GET, multipart uploads, batches,
streams, GraphiQL) and builds a Request, an adapter, a sub-response and a Response
for each; below it Starlette routes and wraps the call twice more. For one JSON
operation that wants one JSON answer that was over a third of a small request's
CPU. This handler reads such a request itself, builds the view's context, runs
the operation through KnownOperations (or, for what that leaves, the view's own
execute_single) and shapes and encodes the result with the view's methods.
Anything else, and any body that is not a well-formed operation, goes on to the
app unchanged, with the body it has already read replayed.

It sits inside the CORS middleware, so browsers get the same headers either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cross_web import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.http import GraphQLRequestData

from threadline.graphql_app import origin_of

if TYPE_CHECKING:
    from threadline.graphql_app import ThreadlineGraphQL
    from threadline.schema.known_operations import KnownOperations

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


def wants_one_json_answer(content_type: bytes, accept: bytes) -> bool:
    """A JSON body, and no multipart (incremental delivery) or event-stream answer asked for."""
    return (
        (content_type == b"application/json" or content_type.startswith(b"application/json;"))
        and b"multipart/" not in accept
        and b"text/event-stream" not in accept
    )


class _PostAdapter:
    """What the view's execute_single reads of the request: its method."""

    method = "POST"


class GraphQLPost:
    """ASGI middleware: answers JSON POSTs to ``path``; the rest goes to ``app``.

    An operation whose text is known and valid runs through ``known``; others
    through ``view``, strawberry's.
    """

    def __init__(
        self,
        app: ASGIApp,
        view: ThreadlineGraphQL,
        known: KnownOperations,
        path: str = "/graphql",
    ) -> None:
        self.app = app
        self.view = view
        self.known = known
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != self.path:
            await self.app(scope, receive, send)
            return
        content_type = accept = authorization = user_agent = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"accept":
                accept = value
            elif name == b"authorization":
                authorization = value
            elif name == b"user-agent":
                user_agent = value
        if not wants_one_json_answer(content_type, accept):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        try:
            request_data = request_data_from_json(self.view.decode_json(body))
        except ValueError:  # not JSON: the view answers that
            request_data = None
        if request_data is None:
            await self.app(scope, _replay(body, receive), send)
            return
        await self._answer(request_data, authorization, user_agent, origin_of(scope), send)

    async def _answer(
        self,
        request_data: GraphQLRequestData,
        authorization: bytes,
        user_agent: bytes,
        origin: str | None,
        send: Send,
    ) -> None:
        view = self.view
        context = view.http_context(
            authorization.decode("latin-1") or None, user_agent.decode("latin-1") or None, origin
        )
        query = request_data.query
        result = None
        if query:
            result = await self.known.execute(
                query, request_data.variables, request_data.operation_name, context
            )
        try:
            if result is None:
                result = await view.execute_single(
                    request=None,  # type: ignore[arg-type]  # it reads only the adapter
                    request_adapter=_PostAdapter(),  # type: ignore[arg-type]
                    sub_response=None,  # type: ignore[arg-type]
                    context=context,
                    root_value=None,
                    request_data=request_data,
                )
        except HTTPException as exc:  # what the view answers with plain text
            await _respond(send, exc.status_code, exc.reason.encode(), _TEXT_HEADERS)
            return
        response = await view.process_result(None, result)  # type: ignore[arg-type]
        if result.errors:
            view._handle_errors(result.errors, response)
        await _respond(send, 200, view.encode_json_bytes(response), JSON_HEADERS)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


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
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def _respond(send: Send, status: int, body: bytes, headers: list[Any]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
