"""The one operation runner: every GraphQL operation, on every path, runs through here.

HTTP and both WebSocket subprotocols reach it as ``ThreadlineSchema.execute`` and
``.stream``, broadcast frames through ``frame_executor`` and ``render_frame``. Whichever
engine runs, the context, cached document, limits, counter and error shaping are done
here. ``direct`` (the default) runs a valid query or mutation on graphql-core, skipping
strawberry's per-request machinery; ``strawberry`` runs everything else, and every
operation with ``FAST_PATHS=off``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, NamedTuple

import orjson
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import (
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
)
from graphql.execution import Executor
from graphql.pyutils import AwaitableOrValue
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType as Allowed

from threadline.errors import DomainError
from threadline.metrics import OPERATIONS_BY_KIND
from threadline.schema.context import Context
from threadline.schema.documents import Documents, KnownDocument
from threadline.schema.engine import plain_leaves
from threadline.schema.engine.internals import graphql_schema, lean_executor
from threadline.schema.errors import shape_error, shape_result

# graphql-core's words for the GraphQL spec's GetOperation error.
NAME_REQUIRED = "Must provide operation name if query contains multiple operations."
OVER_HTTP = "Subscriptions are served over WebSocket (graphql-transport-ws), not HTTP"
DIRECT, STRAWBERRY = "direct", "strawberry"
# graphql-core's kinds as strawberry names what a transport allows.
ALLOWED = {kind: Allowed(kind.value) for kind in OperationType}


class CachedDocuments(SchemaExtension):
    """Strawberry's engine gets the document from the cache (its public parse hook)."""

    def __init__(self, documents: Documents) -> None:
        self.documents = documents

    def on_operation(self) -> Any:
        self.documents.prepare(self.execution_context)
        yield


@dataclass(slots=True)
class Plan:
    """A valid operation picked from a known document, or the refusal it gets instead."""

    known: KnownDocument | None
    operation: OperationDefinitionNode | None = None
    refusal: GraphQLError | None = None


# A text that does not parse, is not valid, or lacks the named operation: strawberry says why.
UNKNOWN = Plan(None)


class Request(NamedTuple):
    """One operation as strawberry's entry points (``execute``, ``stream``) take it: the
    fields are their keywords."""

    query: str | None
    variable_values: dict[str, Any] | None
    context_value: Any
    root_value: Any
    operation_name: str | None
    allowed_operation_types: Iterable[Allowed] | None
    operation_extensions: dict[str, Any] | None


class OperationRunner:
    def __init__(self, schema: Any, documents: Documents, *, fast: bool) -> None:
        """``schema``: the strawberry schema, whose one extension is CachedDocuments."""
        # Operation directives would run as an extension strawberry adds per request.
        assert not schema.directives, "the direct engine skips strawberry's directive extension"
        self.schema = schema
        self.graphql_schema = graphql_schema(schema)
        self.documents = documents
        self.fast = fast
        # The direct engine builds strawberry's resolve infos on graphql-core's plain
        # Executor and reads plain leaves itself; with FAST_PATHS=off, strawberry's.
        self.executor_class: type[Executor[Any]] = schema.execution_context_class
        if fast:
            lean = lean_executor(self.executor_class)
            self.executor_class = plain_leaves.executor_class(
                plain_leaves.plain_leaves(schema), lean
            )

    def plan(
        self, query: str | None, variables: dict[str, Any] | None, operation_name: str | None
    ) -> Plan:
        known = self.documents.known(query) if query else None
        if known is None:
            return UNKNOWN
        cached: Plan | None = known.plans.get(operation_name)
        if cached is not None:
            return cached
        operation = get_operation_ast(known.document, operation_name)
        if operation is None:
            if operation_name is None:  # several operations, none named
                return Plan(known, refusal=GraphQLError(NAME_REQUIRED))
            return UNKNOWN
        refusal = self.documents.over_cost(known, operation, variables)
        plan = Plan(known, operation, refusal)
        if refusal is None and not known.page_variables:  # () once over_cost has looked
            known.plans[operation_name] = plan
        return plan

    async def execute(
        self, strawberry_execute: Callable[..., Awaitable[ExecutionResult]], request: Request
    ) -> ExecutionResult:
        """One operation with one answer (HTTP: JSON POST, GET, multipart)."""
        plan = self.plan(request.query, request.variable_values, request.operation_name)
        own = _own(request.context_value)
        allowed = request.allowed_operation_types
        try:
            if plan.refusal is not None:
                return _refused(plan.refusal)
            if plan.operation is not None:
                kind = plan.operation.operation
                if kind is OperationType.SUBSCRIPTION:
                    return _refused(GraphQLError(OVER_HTTP))  # a clear BAD_USER_INPUT
                if allowed is not None and ALLOWED[kind] not in allowed:
                    raise InvalidOperationTypeError(ALLOWED[kind])  # the view's 400
            if self._engine(plan, allowed, own) == DIRECT:
                # Awaited here, not in a coroutine of its own: each layer of
                # coroutines is crossed again at every wake-up (each database reply).
                result = self._direct(plan, request, own)
                if isawaitable(result):
                    result = await result
                return self._direct_answer(result)
            return shape_result(
                await strawberry_execute(**request._replace(context_value=own)._asdict())
            )
        finally:
            if own is not None:
                await own.close()

    async def stream(
        self,
        strawberry_stream: Callable[..., Awaitable[AsyncGenerator[Any, None]]],
        request: Request,
    ) -> AsyncGenerator[Any, None]:
        """One operation with a stream of answers (both WebSocket subprotocols)."""
        plan = self.plan(request.query, request.variable_values, request.operation_name)
        own = _own(request.context_value)
        try:
            if plan.refusal is not None:
                yield PreExecutionError(data=None, errors=[shape_error(plan.refusal)])
                return
            if self._engine(plan, request.allowed_operation_types, own) == DIRECT:
                result = self._direct(plan, request, own)
                if isawaitable(result):
                    result = await result
                yield self._direct_answer(result)
                return
            source = await strawberry_stream(**request._replace(context_value=own)._asdict())
            try:
                async for result in source:
                    if own is not None and own.after_render is not None:
                        await own.after_render()
                    yield shape_result(result)
            except DomainError as exc:  # after_render's: this frame is not sent, nor any after
                yield _refused(GraphQLError(exc.message, original_error=exc))
            finally:
                await source.aclose()
        finally:
            if own is not None:
                await own.close()

    def _engine(
        self, plan: Plan, allowed: Iterable[Allowed] | None, context: Context | None
    ) -> str:
        """The engine that answers a planned operation, counted by kind; strawberry's
        answers what is unknown or not allowed here (it says why), uncounted.

        Only a query may read from the replica: a mutation reads what it wrote, a
        subscription's log reads must be gap-free.
        """
        if plan.operation is None:
            return STRAWBERRY
        kind = plan.operation.operation
        if allowed is not None and ALLOWED[kind] not in allowed:
            return STRAWBERRY
        query = kind is OperationType.QUERY
        if context is not None:
            context.replica_ok = query
        # Identity, not a frozenset: an Enum's __hash__ is a Python call per operation.
        direct = query or kind is OperationType.MUTATION
        engine = DIRECT if self.fast and direct else STRAWBERRY
        OPERATIONS_BY_KIND[kind.value, engine].inc()
        return engine

    def _direct(
        self, plan: Plan, request: Request, context: Any
    ) -> AwaitableOrValue[GraphQLExecutionResult]:
        """graphql-core's execution of a planned operation (or an awaitable of it)."""
        assert plan.known is not None
        # strawberry's executor hands them to resolvers. Only when sent: graphql-core
        # passes unknown keywords down three calls, each matching them slowly.
        extensions = request.operation_extensions
        custom: dict[str, Any] = {"operation_extensions": extensions} if extensions else {}
        return execute(
            self.graphql_schema,
            plan.known.document,
            root_value=request.root_value,
            context_value=context,
            variable_values=request.variable_values,
            operation_name=request.operation_name,
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
            executor_class=self.executor_class,
            hide_suggestions=self.documents.hide_suggestions,
            **custom,
        )

    def _direct_answer(self, result: Any) -> ExecutionResult:
        assert isinstance(result, GraphQLExecutionResult)  # no incremental delivery here
        return shape_result(ExecutionResult(data=result.data, errors=result.errors))

    def frame_executor(
        self, schema: Any, document: Any, variables: dict[str, Any], context: Any
    ) -> Executor[Any]:
        """The executor a broadcast subscription's frames are rendered with (per event)."""
        built = self.executor_class.build(
            schema, document, raw_variable_values=variables, context_value=context
        )
        if not isinstance(built, Executor):
            raise RuntimeError(f"cannot build a broadcast executor: {built}")
        return built

    async def render_frame(self, executor: Executor[Any], event: Any, context: Context) -> str:
        """One event through a subscription's selection: the JSON payload of its frame."""
        per_event = executor.build_per_event_executor(event)
        per_event.context_value = context
        try:
            result = per_event.execute_operation(False)
            if isawaitable(result):
                result = await result
        finally:
            await context.close()
        assert isinstance(result, GraphQLExecutionResult)
        shape_result(result)
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [e.formatted for e in result.errors]
        return orjson.dumps(payload).decode()


def _own(context: Any) -> Context | None:
    """The operation's own context: a socket's operations share one, each forks it."""
    if not isinstance(context, Context):
        return None
    return context.fork() if context.connection is not None else context


def _refused(refusal: GraphQLError) -> ExecutionResult:
    return ExecutionResult(data=None, errors=[shape_error(refusal)])
