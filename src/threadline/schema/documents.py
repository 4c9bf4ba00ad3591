"""Each distinct operation text is parsed and validated once per process.

One extension instead of strawberry's four (parser cache, token limit, extra
validation rules, validation cache): strawberry runs every extension's hooks on
every request, and a cache hit here is a single dictionary lookup for both the
document and its validation errors.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from graphql import ASTValidationRule, DocumentNode, GraphQLError, parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document


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


class Documents(SchemaExtension):
    """Token limit and extra rules for every operation; parse and validate from the cache."""

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
        self._key: Any = None
        self._hit: tuple[DocumentNode, list[GraphQLError]] | None = None

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = (*context.validation_rules, *self.rules)
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            self._key = (context.query, context.validation_rules)
            self._hit = self.cache.get(self._key)
            if self._hit is not None:
                context.graphql_document = self._hit[0]
            else:
                # Syntax errors and the token limit raise here, and are not cached.
                context.graphql_document = parse(context.query, **context.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self._hit is not None:
            context.pre_execution_errors = self._hit[1]
        elif context.graphql_document is not None and context.pre_execution_errors is None:
            # strawberry's validation: graphql-core's rules plus strawberry's own.
            errors = validate_document(
                context.schema._schema, context.graphql_document, context.validation_rules
            )
            context.pre_execution_errors = errors
            if self._key is not None:
                self.cache.put(self._key, context.graphql_document, errors)
        yield
