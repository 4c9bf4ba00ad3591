"""One place that turns exceptions into GraphQL errors with ``extensions.code``.

Domain errors keep their message and fields; parse and validation errors are
BAD_USER_INPUT; anything else is INTERNAL_SERVER_ERROR, logged with its traceback and a
random ``errorId`` that the client also gets, so that a user's report leads to the log.
"""

from __future__ import annotations

import logging
import secrets
from typing import TypeVar

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.error import GraphQLError
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types.execution import ExecutionResult

from threadline.errors import DomainError, ErrorCode
from threadline.metrics import GRAPHQL_ERRORS

log = logging.getLogger("threadline.graphql")
R = TypeVar("R")


def shape_error(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    # Strawberry wraps some errors once more; unwrap to the domain error.
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    if isinstance(original, DomainError):
        code, message, extra = original.code, original.message, dict(original.extensions)
    elif isinstance(original, InvalidOperationTypeError):
        # A client's choice of transport, not a fault: e.g. a query over the legacy
        # graphql-ws subprotocol, which serves subscriptions only.
        kind = original.operation_type.value
        code, message, extra = ErrorCode.BAD_USER_INPUT, f"A {kind} is not served here", {}
        if kind != "subscription":
            message += ": send it over HTTP or graphql-transport-ws"
    elif original is None or isinstance(original, GraphQLError):
        # graphql-core's own refusals (a variable value a scalar cannot coerce, such
        # as a file or an object for an ID) are the client's input, not our fault.
        code, message, extra = ErrorCode.BAD_USER_INPUT, error.message, {}
        if error.extensions and "code" in error.extensions:
            return error
    else:
        error_id = secrets.token_hex(6)
        log.error("unexpected error %s at %s", error_id, error.path, exc_info=original)
        code, message = ErrorCode.INTERNAL_SERVER_ERROR, f"Internal server error ({error_id})"
        extra = {"errorId": error_id}
    GRAPHQL_ERRORS.labels(code.value).inc()
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={**extra, "code": code.value},
    )


def shape_result(result: R) -> R:
    """Give every error of an execution result its code (the runner's, on every engine)."""
    if isinstance(result, (GraphQLExecutionResult, ExecutionResult)) and result.errors:
        result.errors = [shape_error(e) for e in result.errors]
    return result
