"""A subscription's executor does not grow with the events it renders: graphql-core's
per-event executor shares the subscription's memo of collected subfields, which
held every event's field lists until the subscription ended."""

import asyncio
import gc
from typing import Any

import pytest
from graphql import build_schema, parse
from graphql.execution import Executor
from graphql.execution.collect_fields import FieldDetails

from threadline.schema.engine.internals import memo_per_event

pytestmark = pytest.mark.any_backend

SCHEMA = build_schema(
    """
    type Query { ok: Boolean }
    type Author { id: ID name: String }
    type Message { id: ID body: String author: Author }
    type Subscription { messages: Message }
    """
)
DOCUMENT = parse("subscription { messages { id body author { id name } } }")


def field_details_alive() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, FieldDetails))


def render(executor_class: type[Executor[Any]], events: int) -> int:
    """FieldDetails alive after ``events`` events through one subscription's executor."""
    executor = executor_class.build(SCHEMA, DOCUMENT)
    assert isinstance(executor, Executor)
    before = field_details_alive()
    for n in range(events):
        event = {"messages": {"id": str(n), "body": "hi", "author": {"id": "1", "name": "ann"}}}
        result = executor.build_per_event_executor(event).execute_operation(False)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        assert result.data == {"messages": event["messages"]}  # type: ignore[union-attr]
    grown = field_details_alive() - before
    del executor
    return grown


def test_graphql_cores_executor_keeps_each_events_fields() -> None:
    # The premise: if this fails, graphql-core no longer shares the memo and
    # memo_per_event can go.
    assert render(Executor, 100) >= 100


def test_a_subscription_renders_events_without_growing() -> None:
    assert render(memo_per_event(Executor), 100) == 0
