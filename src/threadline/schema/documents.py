"""Each distinct operation text is parsed and validated once per process.

The document and its validation errors are put on the execution context before
strawberry's parse and validation steps, which then have nothing to do: a cache
hit is one dictionary lookup, with no hooks of their own to run. A text that does
not parse is left to strawberry, which reports the syntax error (and the token
limit) the usual way; such texts are not cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphql import ASTValidationRule, DocumentNode, GraphQLError, parse
from strawberry.schema.schema import validate_document
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
    ) -> None:
        self.cache = cache
        self.rules = tuple(rules)
        self.max_tokens = max_tokens

    def prepare(self, context: ExecutionContext) -> None:
        """Before strawberry parses: the token limit, our rules, and a known document."""
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = (*context.validation_rules, *self.rules)
        if context.graphql_document is not None or not context.query:
            return
        key = (context.query, context.validation_rules)
        entry = self.cache.get(key)
        if entry is None:
            try:
                document = parse(context.query, **context.parse_options)
            except GraphQLError:
                return  # strawberry parses it again and reports the error
            # strawberry's validation: graphql-core's rules, ours, and strawberry's own.
            errors = validate_document(context.schema._schema, document, context.validation_rules)
            entry = (document, errors)
            self.cache.put(key, entry)
        context.graphql_document = entry[0]
        # A copy: strawberry replaces or extends the list on the context.
        context.pre_execution_errors = list(entry[1])
