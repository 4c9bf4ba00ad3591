"""The estimated cost of an operation, counted before it runs (CONTRACT.md, document limits).

A selected field costs the product of the multipliers along its path. A connection (a
field taking ``first``/``last``) multiplies by its page size: the argument's value, else
the page maximum; its ``edges`` add nothing. Every other list of objects multiplies by
its bound in LIST_BOUNDS, the constant the domain enforces; a list with no bound there
stops the model from being built, so a new one cannot slip in counted as short.

Fragments count as inlined, fields merged under one response key once, an interface or
union as its costliest type. ``@skip``/``@include`` are not read; ``__schema`` counts 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_abstract_type,
    is_leaf_type,
    value_from_ast_untyped,
)

from threadline.services import messages, users
from threadline.services.pagination import MAX_PAGE
from threadline.services.text_rules import MAX_DISTINCT_REACTIONS

PAGE_ARGUMENTS = ("first", "last")
REACTIONS_COUNTED = min(10, MAX_DISTINCT_REACTIONS, messages.REACTION_USERS_SHOWN)
# The most items each list that is not a connection can hold, from the services.
LIST_BOUNDS: dict[tuple[str, str], int] = {
    ("Thread", "pinnedMessages"): messages.MAX_PINNED,
    ("Message", "edits"): messages.EDITS_SHOWN,
    ("Message", "attachments"): messages.MAX_ATTACHMENTS,
    ("Message", "mentions"): messages.MAX_MENTIONS,
    # Known exception, under their bounds (20 emoji x 20 users): the web client's
    # pages (web/js/queries.js: every reaction's users on 50 messages and the pins)
    # would cost 148,061 at 20 x 20. Counting them at their bounds awaits a client
    # that loads a reaction's users on demand; both lists are small objects, capped.
    ("Message", "reactions"): REACTIONS_COUNTED,
    ("ReactionChanged", "reactions"): REACTIONS_COUNTED,
    ("ReactionGroup", "users"): REACTIONS_COUNTED,
    ("Query", "mySessions"): users.SESSIONS_SHOWN,
}


@dataclass(frozen=True, slots=True)
class _FieldRule:
    """How a field multiplies what is selected under it."""

    page_arguments: tuple[str, ...] = ()  # a connection: its page size
    list_items: int = 1  # a list that is not a connection's page


class CostModel:
    """The multipliers of every field, taken from the schema once."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema
        # The types connections return: their lists (edges) are the page itself.
        page_types = {
            get_named_type(field.type).name
            for type_ in schema.type_map.values()
            if isinstance(type_, GraphQLObjectType)
            for field in type_.fields.values()
            if any(name in field.args for name in PAGE_ARGUMENTS)
        }
        self.rules: dict[tuple[str, str], _FieldRule] = {}
        for type_ in schema.type_map.values():
            if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
                continue
            for name, field in type_.fields.items():
                pages = tuple(a for a in PAGE_ARGUMENTS if a in field.args)
                output = get_nullable_type(field.type)
                items = 1
                if (
                    isinstance(output, GraphQLList)
                    and type_.name not in page_types
                    and not is_leaf_type(get_named_type(output))
                ):
                    bound = LIST_BOUNDS.get((type_.name, name))
                    if bound is None:
                        raise ValueError(f"{type_.name}.{name} is a list with no known bound")
                    items = bound
                if pages or items != 1:
                    self.rules[type_.name, name] = _FieldRule(pages, items)
        self.plain = _FieldRule()

    def page_variables(self, document: Iterable[Any]) -> tuple[str, ...]:
        """The variables a document's page sizes come from: what a cost depends on."""
        found: dict[str, None] = {}
        stack = [d.selection_set for d in document if getattr(d, "selection_set", None)]
        while stack:
            for selection in stack.pop().selections:
                if isinstance(selection, FieldNode):
                    for argument in selection.arguments or ():
                        if argument.name.value in PAGE_ARGUMENTS and isinstance(
                            argument.value, VariableNode
                        ):
                            found[argument.value.name.value] = None
                if getattr(selection, "selection_set", None) is not None:
                    stack.append(selection.selection_set)
        return tuple(found)

    def cost(
        self,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any] | None,
    ) -> int:
        root = self.schema.get_root_type(operation.operation)
        if root is None:
            return 0
        # The variables' values as the operation will see them: given, else their defaults.
        values: dict[str, Any] = {}
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            if variables is not None and name in variables:
                values[name] = variables[name]
            elif definition.default_value is not None:
                values[name] = value_from_ast_untyped(definition.default_value)
        return _Walk(self, fragments, values).selections(root, [operation.selection_set], 1)


@dataclass(slots=True)
class _Walk:
    model: CostModel
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]

    def selections(
        self, parent: GraphQLNamedType, selection_sets: list[SelectionSetNode], multiplier: int
    ) -> int:
        if is_abstract_type(parent):
            # One object of one type at a time: the costliest type counts.
            possible = self.model.schema.get_possible_types(parent)
            return max((self._object(t, selection_sets, multiplier) for t in possible), default=0)
        if isinstance(parent, GraphQLObjectType):
            return self._object(parent, selection_sets, multiplier)
        return 0

    def _object(
        self, type_: GraphQLObjectType, selection_sets: list[SelectionSetNode], multiplier: int
    ) -> int:
        fields: dict[str, list[FieldNode]] = {}
        for selection_set in selection_sets:
            self._collect(type_, selection_set, fields, set())
        total = 0
        for nodes in fields.values():
            name = nodes[0].name.value
            total += multiplier
            field = type_.fields.get(name)
            if field is None:  # __typename, __schema, __type: no multiplying lists below
                continue
            below = [n.selection_set for n in nodes if n.selection_set is not None]
            if below:
                rule = self.model.rules.get((type_.name, name), self.model.plain)
                factor = self._page_size(rule, nodes[0]) if rule.page_arguments else 1
                inner = multiplier * factor * rule.list_items
                total += self.selections(get_named_type(field.type), below, inner)
        return total

    def _collect(
        self,
        type_: GraphQLObjectType,
        selection_set: SelectionSetNode,
        fields: dict[str, list[FieldNode]],
        spread: set[str],
    ) -> None:
        """The fields selected on ``type_``, by response key, fragments inlined."""
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                fields.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                if condition is None or self._applies(condition.name.value, type_):
                    self._collect(type_, selection.selection_set, fields, spread)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in spread:
                    continue
                spread.add(name)
                if self._applies(fragment.type_condition.name.value, type_):
                    self._collect(type_, fragment.selection_set, fields, spread)

    def _applies(self, condition: str, type_: GraphQLObjectType) -> bool:
        if condition == type_.name:
            return True
        named = self.model.schema.get_type(condition)
        return (
            named is not None
            and is_abstract_type(named)
            and self.model.schema.is_sub_type(named, type_)
        )

    def _page_size(self, rule: _FieldRule, node: FieldNode) -> int:
        """The largest page the field's arguments ask for; the maximum when unset."""
        given = {a.name.value: a.value for a in node.arguments or ()}
        sizes = []
        for name in rule.page_arguments:
            value = given.get(name)
            if isinstance(value, IntValueNode):
                size: Any = int(value.value)
            elif isinstance(value, VariableNode):
                size = self.variables.get(value.name.value)
            else:  # absent or null
                size = None
            if isinstance(size, int) and not isinstance(size, bool):
                sizes.append(min(max(size, 0), MAX_PAGE))
        # Unset means the server's choice: count the most it may choose.
        return max(sizes) if sizes else MAX_PAGE
