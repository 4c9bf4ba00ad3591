"""Plain scalar fields answered by the executor itself: no resolve info, no resolver call.

A field with no resolver and a scalar or enum type (a page of 50 messages has some 400)
is read and coerced directly; whatever that does not settle (a forbidden null, a value
that does not coerce, a missing attribute) goes the usual way, which reports it.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    get_nullable_type,
)
from graphql.execution.executor import Executor
from graphql.pyutils import Undefined

from threadline.schema.engine.internals import is_default_resolver
from threadline.schema.engine.lean_resolvers import strawberry_fields


class Leaf(NamedTuple):
    attribute: str
    type: GraphQLLeafType
    nullable: bool


def plain_leaves(schema: strawberry.Schema) -> dict[str, dict[str, Leaf]]:
    """Per object type name: its fields that read a plain attribute of a leaf type."""
    if schema.config.default_resolver is not getattr:
        return {}
    out: dict[str, dict[str, Leaf]] = {}
    for graphql_type, name, graphql_field, field in strawberry_fields(schema):
        if not is_default_resolver(graphql_field.resolve) or graphql_field.args:
            continue
        nullable = not isinstance(graphql_field.type, GraphQLNonNull)
        kind = get_nullable_type(graphql_field.type)
        if isinstance(kind, GraphQLScalarType | GraphQLEnumType):
            out.setdefault(graphql_type.name, {})[name] = Leaf(field.python_name, kind, nullable)
    return out


class Tally:
    """A count kept on an instance: assigning a class attribute drops CPython's
    attribute caches for that class (10 % of a page's CPU, counting per field)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def executor_class(
    leaves: dict[str, dict[str, Leaf]], base: type[Executor[Any]]
) -> type[Executor[Any]]:
    """``base`` (strawberry's executor, which builds its resolve infos) reading plain leaves."""
    tally = Tally()

    class PlainLeavesExecutor(base):  # type: ignore[valid-type]
        # Fields answered here: how a test (or a debugger) sees that this executor runs.
        answered: ClassVar[Tally] = tally

        def execute_field(
            self,
            parent_type: GraphQLObjectType,
            source: Any,
            field_details_list: Any,
            path: Any,
            position_context: Any,
        ) -> Any:
            fields = leaves.get(parent_type.name)
            if fields is not None and not self.middleware_manager:
                leaf = fields.get(field_details_list[0].node.name.value)
                if leaf is not None:
                    try:
                        value = getattr(source, leaf.attribute)
                        if value is None:
                            if leaf.nullable:
                                tally.count += 1
                                return None
                        else:
                            coerced = leaf.type.coerce_output_value(value)
                            if coerced is not None and coerced is not Undefined:
                                tally.count += 1
                                return coerced
                    except Exception:  # noqa: S110  # the usual way reports it
                        pass
            return super().execute_field(
                parent_type, source, field_details_list, path, position_context
            )

    return PlainLeavesExecutor
