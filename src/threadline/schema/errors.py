"""One place that turns exceptions into GraphQL errors with ``extensions.code``.

Domain errors keep their message and structured fields; parse and validation
errors are BAD_USER_INPUT; anything else is masked as INTERNAL_SERVER_ERROR and
logged with its traceback (never shown to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.error import GraphQLError
from strawberry.types.execution import ExecutionResult

from threadline.errors import DomainError, ErrorCode
from threadline.metrics import GRAPHQL_ERRORS

log = logging.getLogger("threadline.graphql")


def shape_error(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    # Strawberry wraps some errors once more; unwrap to the domain error.
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    if isinstance(original, DomainError):
        code, message, extra = original.code, original.message, dict(original.extensions)
    elif original is None or (error.path is None and isinstance(original, GraphQLError)):
        # The library's own request errors (syntax, validation, coercing variables,
        # which wraps an error of its own): the caller's input, not a fault.
        code, message, extra = ErrorCode.BAD_USER_INPUT, error.message, {}
        if error.extensions and "code" in error.extensions:
            return error
    else:
        log.error("unexpected error at %s", error.path, exc_info=original)
        code, message, extra = ErrorCode.INTERNAL_SERVER_ERROR, "Internal server error", {}
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


def shape_result(result: Any) -> None:
    """Give every error of an execution result its code (OperationScope calls this)."""
    if isinstance(result, (GraphQLExecutionResult, ExecutionResult)) and result.errors:
        result.errors = [shape_error(e) for e in result.errors]
