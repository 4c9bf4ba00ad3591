"""The one schema extension: what every operation gets before and after it runs.

Before: its own context (forked from the request's or the socket's), the document
limits and the parsed, validated document from the cache, and the spec's error
for several operations with no operation name (strawberry would run the first
of them). After: errors shaped
with ``extensions.code``, then the operation's database session closed.

One extension rather than one per concern: strawberry builds a context manager
per extension and lifecycle hook on every request, which cost more than the
work the hooks do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from threadline.metrics import OPERATIONS_BY_KIND
from threadline.schema.context import Context
from threadline.schema.documents import Documents
from threadline.schema.errors import shape_result
from threadline.schema.known_operations import NAME_REQUIRED

# strawberry keeps the operation name the request gave on this attribute; its public
# ``operation_name`` falls back to the first operation's. Checked here, at import.
_PROVIDED_NAME = "_provided_operation_name"
_probe = ExecutionContext(None, None, (), provided_operation_name="x")  # type: ignore[arg-type]
if getattr(_probe, _PROVIDED_NAME, None) != "x":
    raise ImportError(f"strawberry's ExecutionContext lacks {_PROVIDED_NAME}")


def _unnamed_among_several(execution: ExecutionContext) -> bool:
    """Several operations in the document, and the request named none of them."""
    document = execution.graphql_document
    if document is None or getattr(execution, _PROVIDED_NAME) is not None:
        return False
    operations = sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)
    return operations > 1


class OperationScope(SchemaExtension):
    def __init__(self, documents: Documents) -> None:
        self.documents = documents
        self._streamed = False

    async def on_operation(self) -> AsyncIterator[None]:
        execution = self.execution_context
        self.documents.prepare(execution)
        if not execution.pre_execution_errors and _unnamed_among_several(execution):
            execution.pre_execution_errors = [GraphQLError(NAME_REQUIRED)]
        if execution.graphql_document is not None and not execution.pre_execution_errors:
            # (a name the document lacks is strawberry's 400, counted as nothing)
            with contextlib.suppress(RuntimeError):
                OPERATIONS_BY_KIND[execution.operation_type.value].inc()
        shared = execution.context
        own: Context | None = None
        if isinstance(shared, Context):
            # A socket's operations share its context: each gets its own session
            # and loaders. An HTTP request's context is already its own.
            own = shared.fork() if shared.connection is not None else shared
            execution.context = own
        try:
            yield
            if not self._streamed:
                shape_result(execution.result)
        finally:
            if own is not None:
                await own.close()

    def on_stream_result(self, result: Any) -> Iterator[None]:
        self._streamed = True
        shape_result(result)
        yield None
