"""The depth and alias limits (MAX_QUERY_DEPTH, MAX_ALIASES) as validation rules, and
a cap on one response key repeated in a selection set, checked before validation.

strawberry's ``QueryDepthLimiter`` and ``MaxAliasesLimiter`` follow every fragment
spread anew: a document whose fragments each spread the next one twice is 2**n walks,
so some 400 tokens kept the event loop busy for good. Here each fragment is measured
once and its result reused wherever it is spread, and the walk stops as soon as the
document is over the limit. What is counted is strawberry's: depth is the number of
fields with a selection set along the deepest path (fragments inlined, introspection
fields not counted); an alias counts once per place its fragment is spread into.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)

# Deeper than any valid document (MAX_QUERY_DEPTH): the walks stop there, within
# Python's recursion limit, and validation refuses what is below.
_DEEPEST = 100


class _OverLimit(Exception):
    """The document is over the limit: nothing more needs measuring."""


@dataclass(slots=True)
class _Measure:
    """Depth and alias count of selection sets, each fragment measured once.

    Both stop at the first sign of being over ``limit`` (a depth past it exists
    wherever the fragment is spread), so every stored measure is at most ``limit``.
    """

    fragments: Mapping[str, FragmentDefinitionNode]
    limit: int
    known: dict[str, int] = field(default_factory=dict)
    # Fragments being measured: a spread of one of them (a cycle, which validation
    # refuses anyway) adds nothing, as in strawberry's walk.
    open: set[str] = field(default_factory=set)

    def depth(self, selection_set: SelectionSetNode | None, level: int = 0) -> int:
        """The depth below ``selection_set``, which has ``level`` fields above it."""
        deepest = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                if selection.selection_set and not selection.name.value.startswith("__"):
                    if level + 1 > self.limit:
                        raise _OverLimit
                    deepest = max(deepest, 1 + self.depth(selection.selection_set, level + 1))
            elif isinstance(selection, InlineFragmentNode):
                deepest = max(deepest, self.depth(selection.selection_set, level))
            elif isinstance(selection, FragmentSpreadNode):
                below = self._fragment(selection.name.value, self.depth)
                if level + below > self.limit:
                    raise _OverLimit
                deepest = max(deepest, below)
        return deepest

    def aliases(self, selection_set: SelectionSetNode | None, _level: int = 0) -> int:
        count = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                count += (1 if selection.alias else 0) + self.aliases(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                count += self.aliases(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                count += self._fragment(selection.name.value, self.aliases)
            if count > self.limit:
                raise _OverLimit
        return count

    def _fragment(self, name: str, measure: Callable[[SelectionSetNode | None, int], int]) -> int:
        known = self.known.get(name)
        if known is not None:
            return known
        fragment = self.fragments.get(name)
        # A cycle (validation refuses it), or a chain of fragments too long to follow
        # within Python's recursion limit (each link adds no depth).
        if fragment is None or name in self.open or len(self.open) > _DEEPEST:
            return 0
        self.open.add(name)
        try:
            found = self.known[name] = measure(fragment.selection_set, 0)
        finally:
            self.open.discard(name)
        return found


def _parts(
    context: ValidationContext,
) -> tuple[dict[str, FragmentDefinitionNode], list[OperationDefinitionNode]]:
    definitions = context.document.definitions
    fragments = {d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in definitions if isinstance(d, OperationDefinitionNode)]
    return fragments, operations


def depth_limit(max_depth: int) -> type[ValidationRule]:
    """A rule refusing an operation whose depth is over ``max_depth``."""

    class DepthLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            fragments, operations = _parts(context)
            measure = _Measure(fragments, max_depth)
            for operation in operations:
                try:
                    measure.depth(operation.selection_set)
                except _OverLimit:
                    name = operation.name.value if operation.name else "anonymous"
                    message = f"'{name}' exceeds maximum operation depth of {max_depth}"
                    context.report_error(GraphQLError(message, [operation]))

    return DepthLimit


def alias_limit(max_aliases: int) -> type[ValidationRule]:
    """A rule refusing a document with more than ``max_aliases`` aliases in its operations."""

    class AliasLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            fragments, operations = _parts(context)
            measure = _Measure(fragments, max_aliases)
            total = 0
            try:
                for operation in operations:
                    total += measure.aliases(operation.selection_set)
                    if total > max_aliases:
                        raise _OverLimit
            except _OverLimit:
                message = f"More than {max_aliases} aliases found. Allowed: {max_aliases}"
                context.report_error(GraphQLError(message))

    return AliasLimit


# graphql-core's check that fields of one response key can merge compares them in
# pairs: ~4,800 tokens repeating `me { __typename }` took 0.4-1.4 s of event loop,
# signed out. Client documents repeat a key a few times (fragments sharing `id`).
MAX_REPEATS = 50


def repeats_over(document: DocumentNode, limit: int = MAX_REPEATS) -> str | None:
    """The first response key selected more than ``limit`` times in one selection set
    (with the fields its fragments bring, each fragment once however often it is
    spread there, as graphql-core compares them), or None."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    known: dict[str, Counter[str]] = {}
    open_: set[str] = set()

    def keys(selection_set: SelectionSetNode | None, level: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        if level > _DEEPEST:  # refused by the depth limit, or a chain of fragments
            return counts

        def add(key: str, times: int) -> None:
            counts[key] += times
            if counts[key] > limit:
                raise _Repeated(key)

        spread: set[str] = set()
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                add((selection.alias or selection.name).value, 1)
                keys(selection.selection_set, level + 1)  # a selection set of its own
                continue
            if isinstance(selection, InlineFragmentNode):
                brought = keys(selection.selection_set, level + 1)
            elif isinstance(selection, FragmentSpreadNode):
                # graphql-core compares a fragment spread twice in one place once.
                if selection.name.value in spread:
                    continue
                spread.add(selection.name.value)
                brought = fragment(selection.name.value, level + 1)
            for key, times in brought.items():
                add(key, times)
        return counts

    def fragment(name: str, level: int) -> Counter[str]:
        if name not in known:
            definition = fragments.get(name)
            if definition is None or name in open_:  # validation says what is wrong
                return Counter()
            open_.add(name)
            try:
                known[name] = keys(definition.selection_set, level)
            finally:
                open_.discard(name)
        return known[name]

    try:
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                keys(definition.selection_set, 0)
            elif isinstance(definition, FragmentDefinitionNode):
                fragment(definition.name.value, 0)
    except _Repeated as repeated:
        return repeated.key
    return None


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key
