"""Executing a valid operation sent as a JSON POST, beside strawberry's Schema.execute.

Strawberry's Schema.execute builds, for every request, an execution context, the
extension instances, a runner with a context manager per lifecycle hook, and a
middleware manager, before graphql-core runs. For a document parsed and validated
by the document cache, with our one extension and no resolve middleware, all
that amounts to what OperationScope does around the call: here it is done
directly, with plain scalar fields read by the executor (``plain_leaves``). A
text that does not parse or is not valid, or an operation name the text lacks,
is left to strawberry, which answers it the usual way. A subscription gets a
clear refusal (strawberry would run it as a query), and so does a text of several
operations without an operation name (the spec's request error).
"""

from __future__ import annotations

from inspect import isawaitable
from typing import Any

from graphql import GraphQLError, OperationType, execute, get_operation_ast
from strawberry.execution import optimized_is_awaitable
from strawberry.types import ExecutionResult

from threadline.metrics import OPERATIONS_BY_KIND
from threadline.schema import plain_leaves
from threadline.schema.context import Context
from threadline.schema.documents import Documents
from threadline.schema.errors import shape_error, shape_result

# graphql-core's words for the GraphQL spec's GetOperation error.
NAME_REQUIRED = "Must provide operation name if query contains multiple operations."
OVER_HTTP = "Subscriptions are served over WebSocket (graphql-transport-ws), not HTTP"


class KnownOperations:
    def __init__(self, schema: Any, documents: Documents) -> None:
        """``schema``: the strawberry schema, whose one extension is OperationScope."""
        # Operation directives would run as an extension strawberry adds per request.
        assert not schema.directives, "known operations skip strawberry's directive extension"
        self.graphql_schema = schema._schema
        self.documents = documents
        self.executor_class = plain_leaves.executor_class(plain_leaves.plain_leaves(schema))

    def is_subscription(self, query: str | None, operation_name: str | None) -> bool:
        """Whether a valid text's chosen operation is a subscription (False when unsure)."""
        known = self.documents.known(query, self.graphql_schema) if query else None
        if known is None:
            return False
        operation = get_operation_ast(known.document, operation_name)
        return operation is not None and operation.operation is OperationType.SUBSCRIPTION

    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Context,
    ) -> ExecutionResult | None:
        """The result, or None (nothing run, ``context`` untouched) for strawberry to take.

        ``context`` is a request's own (not a socket's shared one), and is closed here.
        """
        known = self.documents.known(query, self.graphql_schema)
        if known is None:
            return None
        document = known.document
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            if operation_name is None:  # several operations, none named
                await context.close()
                return ExecutionResult(data=None, errors=[shape_error(GraphQLError(NAME_REQUIRED))])
            return None
        if operation.operation is OperationType.SUBSCRIPTION:
            await context.close()
            return refused_over_http()
        refusal = self.documents.over_cost(known, operation, variables, self.graphql_schema)
        if refusal is not None:  # refused before it runs: not counted as executed
            await context.close()
            return ExecutionResult(data=None, errors=[shape_error(refusal)])
        OPERATIONS_BY_KIND[operation.operation.value].inc()
        try:
            result = execute(
                self.graphql_schema,
                document,
                context_value=context,
                variable_values=variables,
                operation_name=operation_name,
                is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
                executor_class=self.executor_class,
                hide_suggestions=self.documents.hide_suggestions,
            )
            if isawaitable(result):
                result = await result
            shape_result(result)
        finally:
            await context.close()
        return ExecutionResult(data=result.data, errors=result.errors)


def refused_over_http() -> ExecutionResult:
    """A subscription sent over HTTP (GET or POST): a clear BAD_USER_INPUT."""
    return ExecutionResult(data=None, errors=[shape_error(GraphQLError(OVER_HTTP))])
