"""The strawberry Schema: given root types, our extensions, limits and engine.

graphql_app.py hands in the root types, so that schema/ imports neither resolvers/ nor
subscriptions/."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Coroutine, Iterable
from datetime import datetime
from typing import Any, NamedTuple

import strawberry
from graphql import GraphQLError, NoSchemaIntrospectionCustomRule
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from threadline.config import Settings
from threadline.realtime.caches import TTLCache
from threadline.schema.document_limits import alias_limit, depth_limit
from threadline.schema.documents import Documents
from threadline.schema.engine import lean_resolvers
from threadline.schema.engine.internals import freed_promptly, graphql_schema, memo_per_event
from threadline.schema.engine.runner import CachedDocuments, OperationRunner, Request
from threadline.schema.events import EVENT_TYPES
from threadline.schema.scalars import DateTime
from threadline.schema.types import AttachmentType, NotificationType, SessionType

# Distinct operation texts kept parsed and validated (clients send a fixed set).
DOCUMENT_CACHE_SIZE = 256


class Roots(NamedTuple):
    query: type
    mutation: type
    subscription: type


class ThreadlineSchema(strawberry.Schema):
    """strawberry's Schema whose entry points hand every operation to the one runner."""

    runner: OperationRunner

    def execute(  # the runner's coroutine, not a coroutine around it
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> Coroutine[Any, Any, ExecutionResult]:
        request = Request(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed_operation_types,
            operation_extensions,
        )
        return self.runner.execute(super().execute, request)

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> AsyncGenerator[Any, None]:
        request = Request(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed_operation_types,
            operation_extensions,
        )
        return self.runner.stream(super().stream, request)

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        # Domain errors are answers, not faults; shape_error logs the unexpected ones.
        return None


class QuietExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Variables coerced without "Did you mean ...?" suggestions, which name schema parts."""

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:
        kwargs["hide_suggestions"] = True
        return super().build(*args, **kwargs)


def build_schema(
    roots: Roots, settings: Settings | None = None, *, production: bool | None = None
) -> ThreadlineSchema:
    """The schema with the settings' document limits (the defaults without settings)."""
    settings = settings or Settings.model_construct()
    production = settings.is_production if production is None else production
    # The depth and alias rules are classes made by these limiters; they are made once
    # per schema so that the document cache (keyed by the rules too) hits across requests.
    rules = [
        # Ours, not strawberry's limiters: theirs walk each fragment once per spread.
        depth_limit(settings.max_query_depth),
        alias_limit(settings.max_aliases),
        # Production refuses introspection: one more validation rule, cached like the rest.
        *([NoSchemaIntrospectionCustomRule] if production else []),
    ]
    # strawberry's executor, quiet in production, whose subscription events do not
    # accumulate; with the fast paths, also without a reference cycle per subscription.
    executor = memo_per_event(
        QuietExecutionContext if production else StrawberryGraphQLCoreExecutionContext
    )
    schema = ThreadlineSchema(
        query=roots.query,
        mutation=roots.mutation,
        subscription=roots.subscription,
        types=[*EVENT_TYPES, AttachmentType, NotificationType, SessionType],
        # Called per operation, once ``documents`` (which needs the schema) is made below.
        extensions=[lambda: CachedDocuments(documents)],
        config=StrawberryConfig(auto_camel_case=True, scalar_map={datetime: DateTime}),
        execution_context_class=freed_promptly(executor) if settings.fast_paths else executor,
    )
    if settings.fast_paths:
        lean_resolvers.install(schema)
    documents = Documents(
        graphql_schema(schema),
        TTLCache(math.inf, DOCUMENT_CACHE_SIZE),
        rules=rules,
        max_tokens=settings.max_tokens,
        max_cost=settings.max_query_cost,
        hide_suggestions=production,
    )
    schema.runner = OperationRunner(schema, documents, fast=settings.fast_paths)
    return schema
