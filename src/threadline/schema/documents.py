"""Each distinct operation text is parsed and validated once per process.

The document and its validation errors are put on the execution context before
strawberry's parse and validation steps, which then have nothing to do: a cache
hit is one dictionary lookup, with no hooks of their own to run. A text that does
not parse is left to strawberry, which reports the syntax error (and the token
limit) the usual way; such texts are not cached. In production, validation errors
name nothing the caller did not send: no "Did you mean ...?" suggestions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    parse,
    specified_rules,
    validate,
)
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule
from strawberry.types import ExecutionContext

from threadline.realtime.caches import TTLCache

# (operation text, validation rules) -> (document, validation errors)
DocumentCache = TTLCache[tuple[str, Any], tuple[DocumentNode, list[GraphQLError]]]


class Documents:
    """The limits every operation gets, and the cache that spares re-parsing."""

    def __init__(
        self,
        cache: DocumentCache,
        *,
        rules: Sequence[type[ASTValidationRule]],
        max_tokens: int,
        hide_suggestions: bool = False,
    ) -> None:
        self.cache = cache
        self.rules = tuple(rules)
        self.max_tokens = max_tokens
        self.hide_suggestions = hide_suggestions
        # The rules strawberry's execution context starts with, then ours: what
        # prepare() validates with, so known() shares its cache entries.
        self._default_rules = (*specified_rules, *self.rules)

    def known(self, query: str, schema: GraphQLSchema) -> DocumentNode | None:
        """The document of a text that parses and is valid (cached), or None."""
        entry = self._entry(query, self._default_rules, schema)
        return entry[0] if entry is not None and not entry[1] else None

    def prepare(self, context: ExecutionContext) -> None:
        """Before strawberry parses: the token limit, our rules, and a known document."""
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = (*context.validation_rules, *self.rules)
        if context.graphql_document is not None or not context.query:
            return
        entry = self._entry(context.query, context.validation_rules, context.schema._schema)
        if entry is None:
            return  # strawberry parses it again and reports the error
        context.graphql_document = entry[0]
        # A copy: strawberry replaces or extends the list on the context.
        context.pre_execution_errors = list(entry[1])

    def _entry(
        self, query: str, rules: tuple[type[ASTValidationRule], ...], schema: GraphQLSchema
    ) -> tuple[DocumentNode, list[GraphQLError]] | None:
        """(document, validation errors), cached; None for a text that does not parse."""
        key = (query, rules)
        entry = self.cache.get(key)
        if entry is None:
            try:
                document = parse(query, max_tokens=self.max_tokens)
            except GraphQLError:
                return None
            # strawberry's validate_document (graphql-core's rules, ours, strawberry's
            # own two), with graphql-core's knob for suggestions, which it does not pass.
            errors = validate(
                schema,
                document,
                (*rules, MaybeNullValidationRule, OneOfInputValidationRule),
                hide_suggestions=self.hide_suggestions,
            )
            entry = (document, errors)
            self.cache.put(key, entry)
        return entry
