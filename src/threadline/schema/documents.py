"""Each distinct operation text is parsed and validated once per process.

The document and its validation errors are put on the execution context before
strawberry's parse and validation steps, which then have nothing to do: a cache
hit is one dictionary lookup, with no hooks of their own to run. A text that does
not parse is left to strawberry, which reports the syntax error (and the token
limit) the usual way; such texts are not cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from graphql import ASTValidationRule, DocumentNode, GraphQLError, parse
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext


class DocumentCache:
    """A bounded LRU of (operation text, rules) -> (document, validation errors)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[Any, tuple[DocumentNode, list[GraphQLError]]] = OrderedDict()

    def get(self, key: Any) -> tuple[DocumentNode, list[GraphQLError]] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Any, document: DocumentNode, errors: list[GraphQLError]) -> None:
        self._entries[key] = (document, errors)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


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
            self.cache.put(key, document, errors)
        context.graphql_document = entry[0]
        # A copy: strawberry replaces or extends the list on the context.
        context.pre_execution_errors = list(entry[1])
