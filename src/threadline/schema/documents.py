"""Each distinct operation text is parsed and validated once per process.

The document and its errors go on the execution context before strawberry's parse and
validation steps, which then have nothing to do. A text that does not parse is left to
strawberry to report, uncached. The estimated cost (``query_cost``) is kept per document
by operation name and page-size variables; in production, validation errors carry no
"Did you mean ...?" suggestions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    parse,
    specified_rules,
    validate,
)
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule
from strawberry.types import ExecutionContext

from threadline.errors import QueryTooCostly
from threadline.realtime.caches import TTLCache
from threadline.schema.document_limits import MAX_REPEATS, parts, repeats_over
from threadline.schema.query_cost import CostModel

# Costs kept per document (distinct operation names and page-size values).
COSTS_PER_DOCUMENT = 64


@dataclass(slots=True)
class KnownDocument:
    document: DocumentNode
    errors: list[GraphQLError]
    page_variables: tuple[str, ...] | None = None
    costs: dict[tuple[Any, ...], int] = field(default_factory=dict)
    # The runner's plans, by operation name, of operations within the cost limit
    # whatever their variables: nothing of those is worked out again per request.
    plans: dict[str | None, Any] = field(default_factory=dict)


class Documents:
    """The limits every operation gets, and the cache that spares re-parsing."""

    def __init__(
        self,
        schema: GraphQLSchema,
        # (operation text, validation rules) -> the document and what is known of it
        cache: TTLCache[tuple[str, Any], KnownDocument],
        *,
        rules: Sequence[type[ASTValidationRule]],
        max_tokens: int,
        max_cost: int,
        hide_suggestions: bool = False,
    ) -> None:
        self.schema = schema
        self.cache = cache
        self.rules = tuple(rules)
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.cost_model = CostModel(schema)  # the schema's field multipliers, read once
        self.hide_suggestions = hide_suggestions
        # The rules strawberry's execution context starts with, then ours: what
        # prepare() validates with, so known() shares its cache entries.
        self._default_rules = (*specified_rules, *self.rules)

    def known(self, query: str) -> KnownDocument | None:
        """A text that parses and is valid (cached), or None."""
        entry = self._entry(query, self._default_rules)
        return entry if entry is not None and not entry.errors else None

    def over_cost(
        self,
        entry: KnownDocument,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any] | None,
    ) -> GraphQLError | None:
        """QUERY_TOO_COSTLY for an operation whose estimated cost is over the limit."""
        pages = entry.page_variables
        if pages is None:
            pages = self.cost_model.page_variables(entry.document.definitions)
            entry.page_variables = pages
        name = operation.name.value if operation.name else None
        if pages:
            values = variables or {}
            key = (name, *(_hashable(values[n]) if n in values else _ABSENT for n in pages))
        else:  # the cost does not depend on the variables
            key = (name,)
        cost = entry.costs.get(key)
        if cost is None:
            cost = self.cost_model.cost(operation, parts(entry.document)[0], variables)
            if len(entry.costs) >= COSTS_PER_DOCUMENT:
                entry.costs.clear()
            entry.costs[key] = cost
        if cost <= self.max_cost:
            return None
        refusal = QueryTooCostly(cost, self.max_cost)
        return GraphQLError(refusal.message, original_error=refusal)  # shaped by the runner

    def prepare(self, context: ExecutionContext) -> None:
        """Before strawberry parses: the token limit, our rules, and a known document
        (the operation runner has checked its cost already)."""
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = (*context.validation_rules, *self.rules)
        if context.graphql_document is not None or not context.query:
            return
        entry = self._entry(context.query, context.validation_rules)
        if entry is None:
            return  # strawberry parses it again and reports the error
        context.graphql_document = entry.document
        # A copy: strawberry replaces or extends the list on the context.
        context.pre_execution_errors = list(entry.errors)

    def _entry(
        self, query: str, rules: tuple[type[ASTValidationRule], ...]
    ) -> KnownDocument | None:
        """The document and its validation errors, cached; None for a text that does not parse."""
        key = (query, rules)
        entry = self.cache.get(key)
        if entry is None:
            try:
                document = parse(query, max_tokens=self.max_tokens)
            except GraphQLError:
                return None
            # What strawberry validates with (graphql-core's rules, ours, strawberry's
            # own two), with graphql-core's knob for suggestions, which it does not pass.
            repeated = repeats_over(document)
            errors = (
                [GraphQLError(f"'{repeated}' is selected over {MAX_REPEATS} times in one place")]
                if repeated is not None
                else validate(
                    self.schema,
                    document,
                    (*rules, MaybeNullValidationRule, OneOfInputValidationRule),
                    hide_suggestions=self.hide_suggestions,
                )
            )
            entry = KnownDocument(document, errors)
            self.cache.put(key, entry)
        return entry


# A variable not sent (its default applies), apart from one sent as null.
_ABSENT = ("absent",)


def _hashable(value: object) -> object:
    """A variable's value as part of a cost key (a page size is an int or null)."""
    plain = value is None or (isinstance(value, int) and not isinstance(value, bool))
    return value if plain else repr(value)
