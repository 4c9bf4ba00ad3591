"""Every private name of strawberry and graphql-core that Threadline uses, and nothing else.

Each is checked when this module is imported, so that an upgrade that renames one fails
at start-up naming the library, its version and the name, rather than answering wrongly.
After such an upgrade, run ``tests/test_fast_paths_differential.py``.
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


def _require(package: str, holder: object, name: str, found: bool | None = None) -> None:
    """Fail at import when ``found`` is false (by default: ``holder.name`` is callable)."""
    if found is None:
        found = callable(getattr(holder, name, None))
    if not found:
        where = getattr(holder, "__qualname__", repr(holder))
        raise LibraryChanged(
            f"{package} {version(package)} lacks {where}.{name}, which threadline's "
            f"schema/engine uses: pin {package} to the version it was written against"
        )


def _require_use(package: str, holder: Any, name: str, *users: Callable[..., Any]) -> None:
    """Fail at import unless each of ``users`` (by default ``holder``, a function), or a
    function defined in it, uses ``name``; the message names ``holder.name``."""
    for function in users or (holder,):
        codes = [function.__code__]
        while codes:
            code = codes.pop()
            if name in code.co_names:
                break
            codes.extend(c for c in code.co_consts if isinstance(c, CodeType))
        else:
            _require(package, holder, name, False)


_STRAWBERRY, _CORE = "strawberry-graphql", "graphql-core"
_INFO_FIELDS = {f.name for f in dataclasses.fields(Info)}
_require(_STRAWBERRY, Info, "_raw_info", "_raw_info" in _INFO_FIELDS)
_require(_STRAWBERRY, Info, "_field", "_field" in _INFO_FIELDS)
_require_use(_STRAWBERRY, strawberry.Schema.__init__, "_schema")
# On default resolvers, set by from_resolver.
_require_use(_STRAWBERRY, GraphQLCoreConverter, "_is_default", GraphQLCoreConverter.from_resolver)
_require(_STRAWBERRY, BaseGraphQLTransportWSHandler, "_send_result_stream")
_require(_STRAWBERRY, AsyncBaseHTTPView, "_handle_errors")
_require(_CORE, Executor, "execute_field")
_require(_CORE, Executor, "middleware_manager", "middleware_manager" in Executor.__annotations__)
_require_use(_CORE, Executor, "_relevant_sub_fields", Executor.__init__, Executor.collect_subfields)


def lean_executor(strawberry_class: type[Executor[Any]]) -> type[Executor[Any]]:
    """graphql-core's Executor building resolve infos as ``strawberry_class`` does.

    strawberry's derives from IncrementalExecutor (@defer, @stream: not declared here),
    whose set-up costs more than a small operation's resolvers.
    """

    class LeanExecutor(freed_promptly(memo_per_event(Executor))):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.operation_extensions = kwargs.pop("operation_extensions", None)
            super().__init__(*args, **kwargs)

    LeanExecutor.build_resolve_info = strawberry_class.build_resolve_info
    return LeanExecutor


def memo_per_event(executor_class: type[Executor[Any]]) -> type[Executor[Any]]:
    """``executor_class`` whose subscription events each memoize their own subfields.

    An event's executor is a shallow copy sharing the subscription's memo, which kept
    each event's field lists alive (30 KB a message at 10,000 sockets, measured)."""

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

    graphql-core binds them to their executor: a cycle of ~50 objects per operation
    left to the cyclic collector, whose pauses grow with what it walks."""
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
    return schema._schema


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
        """Runs as the operation's results start to be sent; its answer goes to after_stream."""
        return None

    async def after_stream(self, operation: Any, result_source: Any, kept: Any) -> None:
        """Runs once the operation's results are sent, before it completes."""
