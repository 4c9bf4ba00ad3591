"""Every private name of strawberry and graphql-core that Threadline uses, and nothing else.

The fast paths (``runner``, ``plain_leaves``, ``lean_resolvers``) and a few seams
of the transport reach into the libraries where they have no public hook. Each
such name is used here and only here, and is checked when this module is
imported: an upgrade that renames one fails at start-up with one line naming the
library, its version and the name, rather than answering wrongly. With such an
upgrade, run ``tests/test_fast_paths_differential.py`` (fast paths on and off).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from importlib.metadata import version
from types import CodeType
from typing import Any

import strawberry
from graphql import GraphQLResolveInfo, GraphQLResolveInfoHelpers, GraphQLSchema
from graphql.execution import Executor
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.types.field import StrawberryField
from strawberry.types.info import Info


class LibraryChanged(ImportError):
    """A private name the fast paths were written against is gone."""


def _require(package: str, holder: object, name: str, found: bool) -> None:
    if not found:
        where = getattr(holder, "__qualname__", repr(holder))
        raise LibraryChanged(
            f"{package} {version(package)} lacks {where}.{name}, which threadline's "
            f"schema/engine uses: pin {package} to the version it was written against"
        )


def _source_mentions(function: Callable[..., Any], text: str) -> bool:
    """Whether ``function`` (or a function defined in it) uses the name ``text``."""
    codes = [function.__code__]
    while codes:
        code = codes.pop()
        if text in code.co_names:
            return True
        codes.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return False


_INFO_FIELDS = {f.name for f in dataclasses.fields(Info)}
_require("strawberry-graphql", Info, "_raw_info", "_raw_info" in _INFO_FIELDS)
_require("strawberry-graphql", Info, "_field", "_field" in _INFO_FIELDS)
_require(
    "strawberry-graphql",
    strawberry.Schema.__init__,
    "_schema",
    _source_mentions(strawberry.Schema.__init__, "_schema"),
)
_require(
    "strawberry-graphql",
    GraphQLCoreConverter,
    "_is_default (on default resolvers)",
    _source_mentions(GraphQLCoreConverter.from_resolver, "_is_default"),
)
_require(
    "strawberry-graphql",
    BaseGraphQLTransportWSHandler,
    "_send_result_stream",
    callable(getattr(BaseGraphQLTransportWSHandler, "_send_result_stream", None)),
)
_require(
    "strawberry-graphql",
    AsyncBaseHTTPView,
    "_handle_errors",
    callable(getattr(AsyncBaseHTTPView, "_handle_errors", None)),
)
_require(
    "graphql-core", Executor, "execute_field", callable(getattr(Executor, "execute_field", None))
)
_require(
    "graphql-core",
    Executor,
    "middleware_manager",
    "middleware_manager" in getattr(Executor, "__annotations__", {}),
)


def lean_executor(strawberry_class: type[Executor[Any]]) -> type[Executor[Any]]:
    """graphql-core's Executor building resolve infos as ``strawberry_class`` does.

    strawberry's executor derives from graphql-core's IncrementalExecutor (for
    @defer and @stream, which this schema does not declare), whose set-up costs
    more than a small operation's resolvers; resolvers get the same infos from this.
    """

    class LeanExecutor(freed_promptly(memo_per_event(Executor))):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.operation_extensions = kwargs.pop("operation_extensions", None)
            super().__init__(*args, **kwargs)

    LeanExecutor.build_resolve_info = strawberry_class.build_resolve_info
    return LeanExecutor


_require(
    "graphql-core",
    Executor,
    "_relevant_sub_fields",
    _source_mentions(Executor.__init__, "_relevant_sub_fields")
    and _source_mentions(Executor.collect_subfields, "_relevant_sub_fields"),
)


def memo_per_event(executor_class: type[Executor[Any]]) -> type[Executor[Any]]:
    """``executor_class`` whose subscription events each memoize their own subfields.

    graphql-core's executor for an event is a shallow copy of the subscription's,
    sharing its memo of collected subfields, keyed by the identity of each event's
    field lists and holding them alive: a subscription grew by some 25 objects an
    event until it ended (30 KB a message at 10,000 sockets, measured)."""

    class MemoPerEvent(executor_class):  # type: ignore[valid-type]
        def build_per_event_executor(self, payload: Any) -> Executor[Any]:
            executor: Executor[Any] = super().build_per_event_executor(payload)
            executor._relevant_sub_fields = {}
            return executor

    return MemoPerEvent


def freed_promptly(executor_class: type[Executor[Any]]) -> type[Executor[Any]]:
    """``executor_class`` without the reference cycle of its helpers (_weak_helpers):
    the lean executor's base, and strawberry's executor (it sets up subscriptions)."""

    class FreedPromptly(executor_class):  # type: ignore[valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.async_helpers = _weak_helpers(self)

    return FreedPromptly


def _weak_helpers(executor: Executor[Any]) -> GraphQLResolveInfoHelpers:
    """The resolvers' gather and track, reaching ``executor`` by a weak reference.

    graphql-core binds them to the executor that holds them: a reference cycle
    per operation, its ~50 objects left to the cyclic collector, whose pauses grow
    with what it has to walk (10,000 sockets connecting). Without the cycle an
    operation's executor is freed as soon as its answer is out."""
    ref = weakref.ref(executor)

    def alive() -> Executor[Any]:
        found = ref()
        if found is None:
            raise RuntimeError("a resolver used its operation's helpers after the operation ended")
        return found

    def gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
        return alive().gather_async_work(values)

    def track(values: Sequence[Any]) -> None:
        alive().track_async_work(values)

    return GraphQLResolveInfoHelpers(gather=gather, track=track)


def graphql_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """graphql-core's schema under strawberry's."""
    core: GraphQLSchema = schema._schema
    return core


def raw_info(info: Info[Any, Any]) -> GraphQLResolveInfo[Any]:
    """graphql-core's resolve info under strawberry's ``Info``."""
    return info._raw_info


def info_maker(info_class: type[Info[Any, Any]], field: StrawberryField) -> Callable[..., Any]:
    """Builds the ``Info`` strawberry would hand ``field``'s resolver: call with ``_raw_info``."""
    return partial(info_class, _field=field)  # a partial: no Python frame per call


def is_default_resolver(resolve: object) -> bool:
    """Whether strawberry made this resolver for a field with none of its own."""
    return bool(getattr(resolve, "_is_default", False))


def handle_errors(
    view: AsyncBaseHTTPView[Any, Any, Any, Any, Any, Any, Any], errors: Any, response: Any
) -> None:
    """The view's hook for a response's errors (Sentry's integration overrides it)."""
    view._handle_errors(errors, response)


class StreamHook(BaseGraphQLTransportWSHandler[Any, Any]):
    """graphql-transport-ws with a hook after an operation's stream is sent."""

    async def _send_result_stream(self, operation: Any, result_source: Any) -> None:
        kept = self.before_stream(operation)
        try:
            await super()._send_result_stream(operation, result_source)
        except WebSocketDisconnected:
            # The client went away while a result was on its way: the end of the
            # operation, not a failure of the worker (strawberry would log a traceback).
            await result_source.aclose()
            return
        await self.after_stream(operation, result_source, kept)

    def before_stream(self, operation: Any) -> Any:
        """Runs as the operation's results start to be sent; what it answers goes to
        ``after_stream``."""
        return None

    async def after_stream(self, operation: Any, result_source: Any, kept: Any) -> None:
        """Runs once the operation's results are sent, before it completes."""
