"""Broadcast subscriptions: one execution per event, the same frame to every subscriber.

Strawberry would run a selection once per subscriber and event: with 200 subscribers
almost all of the server's work. A selection that reads nothing of who is watching
depends only on (operation, variables, event), so it is executed and serialised once
per process (as GraphQL-Ruby's "broadcast" subscriptions); Strawberry still parses,
validates, limits and authorises each operation.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import DocumentNode, FieldNode, Undefined, VariableNode, Visitor, visit
from graphql.execution import Executor
from strawberry import Info

from threadline.realtime.caches import TTLCache
from threadline.realtime.fanout import Frame
from threadline.runtime import Runtime
from threadline.schema.engine.internals import raw_info
from threadline.schema.engine.runner import OperationRunner
from threadline.schema.viewer_fields import viewer_field_names
from threadline.services.events import EventKind, LoggedEvent, shows_deleted, stopped_after
from threadline.subscriptions.rendering import rendered


def viewer_independent(info: Info) -> bool:
    # The fields marked READS_VIEWER where they are declared (schema/viewer_fields.py).
    return not (_selected(info).fields & viewer_field_names(info.schema))


def _inputs(info: Info) -> dict[str, Any]:
    """The operation's variables as the client sent them."""
    values = raw_info(info).variable_values
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


class _Uses(Visitor):
    """The fields named and the uses of each variable in the selection sets visited."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: set[str] = set()
        self.variables: Counter[str] = Counter()

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        self.fields.add(node.name.value)

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.variables[node.name.value] += 1


@dataclass(frozen=True, slots=True)
class _Selection:
    fields: frozenset[str]
    # Variables that only say where the stream starts (the root field's ``afterSeq``).
    # They do not change a frame, so subscribers that differ only in them share one
    # rendering (clients resuming from different points are the usual case).
    start_only: frozenset[str]


# By the operation's node: the cached document's nodes are the same objects for
# every subscriber that sent that text.
_SELECTIONS: dict[_Same, _Selection] = {}
_SELECTIONS_SIZE = 512


def _selected(info: Info) -> _Selection:
    """What the operation selects, worked out once per document rather than walked at
    every subscribe. A fragment only another operation of the document spreads counts
    too: that errs towards rendering per subscriber, and towards sharing less."""
    raw = raw_info(info)
    operation = _Same(raw.operation)
    if (known := _SELECTIONS.get(operation)) is not None:
        return known
    if len(_SELECTIONS) >= _SELECTIONS_SIZE:
        _SELECTIONS.clear()
    uses = _Uses()
    for definition in (raw.operation, *raw.fragments.values()):
        visit(definition.selection_set, uses)
    start_only = frozenset(
        argument.value.name.value
        for field_node in raw.field_nodes
        for argument in field_node.arguments or ()
        if argument.name.value == "afterSeq"
        and isinstance(argument.value, VariableNode)
        and uses.variables[argument.value.name.value] == 1
    )
    found = _SELECTIONS[operation] = _Selection(frozenset(uses.fields), start_only)
    return found


class BroadcastFrames:
    """A broadcast operation's frames, as the fan-out asks for them (``FrameSource``).

    Its operation and variables are taken from the first subscriber's ``info`` without
    keeping its context (and so its socket) alive; two with equal keys render alike.
    """

    __slots__ = ("_frames", "_runtime", "document", "key", "schema", "variables")

    def __init__(self, info: Info, frames: FrameRenderer, runtime: Runtime) -> None:
        raw = raw_info(info)
        self.schema = raw.schema
        self.document = DocumentNode(definitions=(raw.operation, *raw.fragments.values()))
        self.variables = _inputs(info)
        skip = _selected(info).start_only
        rendered_by = {k: v for k, v in self.variables.items() if k not in skip}
        # Decoded: orjson's bytes keep their whole write buffer (about 4 KB), and this
        # key lives as long as the subscription.
        encoded = orjson.dumps(rendered_by, option=orjson.OPT_SORT_KEYS, default=str).decode()
        self.key: tuple[Any, ...] = (_Same(raw.operation), encoded)
        self._frames = frames
        self._runtime = runtime

    async def render(self, event: LoggedEvent, horizon: int) -> Frame:
        # By the horizon too: a frame rendered live shows the messages it nests (a
        # reply's parent) as they were then; one of them deleted since must not come
        # back in the same event replayed from the log (whose horizon is later).
        deleted = shows_deleted(event)
        key = (event.thread_id, event.seq, deleted, horizon)
        text, read = await self._frames.render(self, key, lambda: rendered(self._runtime, event))
        # What it read from the database (a ThreadUpdated its thread; a replayed event its
        # message's deletion, events_after) is as it was then, maybe past a removal: read
        # the log now for who lost the thread.
        if not (read or deleted or event.kind is EventKind.THREAD_UPDATED):
            return Frame(text)
        return Frame(text, await stopped_after(self._runtime.db, event.thread_id, event.seq))


class FrameRenderer:
    """Executes a subscription's selection once per event and keeps the JSON payload."""

    def __init__(self, make_context: Callable[[], Any], runner: OperationRunner) -> None:
        self._make_context = make_context
        self._runner = runner
        # The payload, and whether rendering it read the database.
        self._frames: TTLCache[tuple[Any, ...], tuple[str, bool]] = TTLCache(30.0, 4096)
        self._executors: TTLCache[tuple[Any, ...], Executor[Any]] = TTLCache(300.0, 512)
        self._rendering: dict[tuple[Any, ...], asyncio.Future[tuple[str, bool]]] = {}

    def _executor(self, template: BroadcastFrames) -> Executor[Any]:
        if (executor := self._executors.get(template.key)) is None:
            executor = self._runner.frame_executor(
                template.schema, template.document, template.variables, self._make_context()
            )
            self._executors.put(template.key, executor)
        return executor

    async def render(
        self,
        template: BroadcastFrames,
        event_key: tuple[Any, ...],
        make_event: Callable[[], Awaitable[Any]],
    ) -> tuple[str, bool]:
        """The JSON payload of this operation for this event, computed once, and whether
        computing it read the database."""
        key = (*template.key, *event_key)
        if (cached := self._frames.get(key)) is not None:
            return cached
        if (running := self._rendering.get(key)) is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # Its renderer was cancelled (its socket closed, its group's pump stopped):
                # render it here instead, unless this reader was cancelled too.
                if (this := asyncio.current_task()) is None or this.cancelling():
                    raise
            return await self.render(template, event_key, make_event)
        future: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
        self._rendering[key] = future
        try:
            executor = self._executor(template)
            event = await make_event()
            context = self._make_context()
            # Every subscriber of the frame was checked for this thread and leaves the
            # group when removed: the frame may show that thread, and no other.
            context.broadcast_thread = uuid.UUID(str(event.thread_id))
            frame = await self._runner.render_frame(executor, event, context)
            done = frame, context.read_database
            self._frames.put(key, done)
            future.set_result(done)
            return done
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._rendering[key]
