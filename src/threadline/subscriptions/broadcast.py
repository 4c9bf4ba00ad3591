"""Broadcast subscriptions: one execution per event, the same frame to every subscriber.

Strawberry would run a subscription's selection set once per subscriber and
event; for a thread with 200 subscribers that is almost all of the server's work.
When a graphql-transport-ws subscription's selection reads nothing that depends
on who is watching, its result for an event depends only on (operation,
variables, event): it is computed once per process, serialised once, and written
to each socket with that operation's id. Strawberry still parses, validates,
limits and authorises the operation as usual (GraphQL-Ruby's "broadcast"
subscriptions are the precedent).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
    Undefined,
)
from graphql.execution import Executor
from strawberry import Info

from threadline.realtime.caches import TTLCache
from threadline.schema.errors import shape_error

# Fields whose value depends on the viewer, or that act for the viewer.
VIEWER_FIELDS = frozenset(
    {"reactedByMe", "myRole", "unreadCount", "lastReadSeq", "muted", "preferences", "messages"}
)


class DirectSink:
    """Where a graphql-transport-ws operation's frames go when sent directly."""

    __slots__ = ("_prefix", "operation_id", "send_text")

    def __init__(self, operation_id: str, send_text: Callable[[str], Awaitable[None]]) -> None:
        self.operation_id = operation_id
        self.send_text = send_text
        self._prefix = '{"id":' + orjson.dumps(operation_id).decode() + ',"type":"next","payload":'

    def frame(self, payload: str) -> str:
        return self._prefix + payload + "}"


CURRENT_SINK: contextvars.ContextVar[DirectSink | None] = contextvars.ContextVar(
    "threadline_direct_sink", default=None
)


def _names(
    selection: SelectionSetNode | None, fragments: dict[str, Any], seen: set[str]
) -> set[str]:
    names: set[str] = set()
    if selection is None:
        return names
    for node in selection.selections:
        if isinstance(node, FieldNode):
            names.add(node.name.value)
            names |= _names(node.selection_set, fragments, seen)
        elif isinstance(node, InlineFragmentNode):
            names |= _names(node.selection_set, fragments, seen)
        elif isinstance(node, FragmentSpreadNode) and node.name.value not in seen:
            seen.add(node.name.value)
            fragment = fragments.get(node.name.value)
            if fragment is not None:
                names |= _names(fragment.selection_set, fragments, seen)
    return names


def viewer_independent(info: Info) -> bool:
    raw = info._raw_info
    fields = set()
    for node in raw.field_nodes:
        fields |= _names(node.selection_set, raw.fragments, set())
    return not (fields & VIEWER_FIELDS)


def _inputs(info: Info) -> dict[str, Any]:
    """The operation's variables as the client sent them."""
    values = info._raw_info.variable_values
    sources = getattr(values, "sources", None)
    if sources is None:  # strawberry hands resolvers the coerced dict
        return dict(values)  # type: ignore[arg-type]
    return {name: src.value for name, src in sources.items() if src.value is not Undefined}


class _Same:
    """A cache-key part that compares by identity and keeps its object alive."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


class FrameRenderer:
    """Executes a subscription's selection once per event and keeps the JSON payload."""

    def __init__(self, make_context: Callable[[], Any]) -> None:
        self._make_context = make_context
        self._frames: TTLCache[tuple[Any, ...], str] = TTLCache(30.0, 4096)
        self._executors: TTLCache[tuple[Any, ...], Executor[Any]] = TTLCache(300.0, 512)
        self._rendering: dict[tuple[Any, ...], asyncio.Future[str]] = {}

    def _executor(self, info: Info, key: tuple[Any, ...]) -> Executor[Any]:
        executor = self._executors.get(key)
        if executor is None:
            raw = info._raw_info
            document = DocumentNode(definitions=(raw.operation, *raw.fragments.values()))
            built = Executor.build(
                raw.schema,
                document,
                raw_variable_values=_inputs(info),
                context_value=self._make_context(),
            )
            if not isinstance(built, Executor):
                raise RuntimeError(f"cannot build a broadcast executor: {built}")
            executor = built
            self._executors.put(key, executor)
        return executor

    def operation_key(self, info: Info) -> tuple[Any, ...]:
        """What makes two subscriptions render alike: the operation and its variables."""
        # Decoded: orjson's bytes keep their whole write buffer (about 4 KB), and this
        # key lives as long as the subscription.
        variables = orjson.dumps(_inputs(info), option=orjson.OPT_SORT_KEYS, default=str).decode()
        return (_Same(info._raw_info.operation), variables)

    async def render(
        self,
        info: Info,
        op_key: tuple[Any, ...],
        event_key: tuple[Any, ...],
        make_event: Callable[[], Awaitable[Any]],
    ) -> str:
        """The JSON payload of this operation for this event, computed once."""
        key = (*op_key, *event_key)
        cached = self._frames.get(key)
        if cached is not None:
            return cached
        running = self._rendering.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._rendering[key] = future
        try:
            text = await self._execute(self._executor(info, op_key), await make_event())
            self._frames.put(key, text)
            future.set_result(text)
            return text
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._rendering[key]

    async def _execute(self, executor: Executor[Any], event: Any) -> str:
        per_event = executor.build_per_event_executor(event)
        context = self._make_context()
        per_event.context_value = context
        try:
            result = per_event.execute_operation(False)
            if not isinstance(result, ExecutionResult):
                result = await result
        finally:
            await context.close()
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [shape_error(e).formatted for e in result.errors]
        return orjson.dumps(payload).decode()
