"""The schema's direct resolver calls: which fields get one, and that their argument
conversion gives what strawberry's own would."""

from __future__ import annotations

from typing import Any

import pytest
import strawberry
from graphql import GraphQLObjectType
from strawberry.types.arguments import convert_argument

from threadline.graphql_app import ROOTS
from threadline.schema.engine import lean_resolvers
from threadline.schema.engine.internals import graphql_schema
from threadline.schema.schema import build_schema

SCHEMA = build_schema(ROOTS)


def _resolver_name(type_name: str, field_name: str) -> str:
    graphql_type = graphql_schema(SCHEMA).type_map[type_name]
    assert isinstance(graphql_type, GraphQLObjectType)
    resolve = graphql_type.fields[field_name].resolve
    return getattr(resolve, "__qualname__", "")


@pytest.mark.parametrize(
    ("type_name", "field_name"),
    [
        ("Message", "author"),
        ("Message", "readBy"),
        ("Thread", "messages"),
        ("Mutation", "sendMessage"),  # an input object and a permission check
        ("Query", "thread"),
    ],
)
def test_hot_fields_are_called_directly(type_name: str, field_name: str) -> None:
    assert _resolver_name(type_name, field_name).startswith("lean_resolver")


def test_fields_it_cannot_convert_keep_strawberrys_resolver() -> None:
    # An enum argument, and the subscriptions.
    assert not _resolver_name("Mutation", "setParticipantRole").startswith("lean_resolver")
    assert not _resolver_name("Subscription", "threadEvents").startswith("lean_resolver")


@pytest.mark.parametrize(
    ("input_name", "value"),
    [
        ("SendMessageInput", {"threadId": "t", "body": "hi"}),
        ("SendMessageInput", {"threadId": "t", "body": "hi", "attachmentIds": None}),
        (
            "SendMessageInput",
            {"threadId": "t", "body": "b", "parentId": "p", "clientId": "c", "attachmentIds": []},
        ),
        ("UpdateThreadInput", {}),
        ("UpdateThreadInput", {"title": "x", "description": None}),
        ("CreateThreadInput", {"title": "x", "participantIds": ["u1", "u2"]}),
        ("UpdateMeInput", {"preferences": {"theme": "dark"}}),
    ],
)
def test_input_conversion_matches_strawberry(input_name: str, value: dict[str, Any]) -> None:
    graphql_type = graphql_schema(SCHEMA).type_map[input_name]
    convert = lean_resolvers.converter(graphql_type, SCHEMA.config)  # type: ignore[arg-type]
    assert convert is not None
    definition = graphql_type.extensions[lean_resolvers.BACKREF]
    expected = convert_argument(
        value, definition.origin, SCHEMA.schema_converter.scalar_registry, SCHEMA.config
    )
    assert convert(value) == expected


def test_a_schema_with_exception_handlers_keeps_strawberrys_resolvers() -> None:
    class Oops(Exception):
        pass

    @strawberry.type
    class Refused:
        reason: str

    class Handler(strawberry.ExceptionHandler[Oops, Refused]):  # type: ignore[misc]
        def handle(self, exception: Oops, *, field: Any, info: Any) -> Refused:
            return Refused(reason="oops")

    @strawberry.type
    class Query:
        @strawberry.field
        def answer(self, n: int) -> int:
            return n

    assert lean_resolvers.install(strawberry.Schema(query=Query)) == 1
    handled = strawberry.Schema(query=Query, types=[Refused], exception_handlers=[Handler()])
    assert lean_resolvers.install(handled) == 0
