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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

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

# A chain of fragments longer than this (each link adds no depth) is not followed
# further, within Python's recursion limit; validation refuses what is below.
_DEEPEST = 100
# graphql-core's check that fields of one response key can merge compares them in
# pairs: ~4,800 tokens repeating `me { __typename }` took 0.4-1.4 s of event loop,
# signed out. Client documents repeat a key a few times (fragments sharing `id`).
MAX_REPEATS = 50

T = TypeVar("T")


class _OverLimit(Exception):
    """The document is over the limit: nothing more needs measuring (the repeated key, if any)."""


@dataclass(slots=True)
class _Measure:
    """Depth, alias count or repeated response keys of selection sets, each fragment
    measured once (one instance serves one of the three).

    Each stops at the first sign of being over ``limit`` (a depth past it exists
    wherever the fragment is spread), so every stored measure is within ``limit``.
    """

    fragments: Mapping[str, FragmentDefinitionNode]
    limit: int
    known: dict[str, Any] = field(default_factory=dict)
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
                below = self.fragment(selection.name.value, self.depth, 0)
                if level + below > self.limit:
                    raise _OverLimit
                deepest = max(deepest, below)
        return deepest

    def aliases(self, selection_set: SelectionSetNode | None) -> int:
        count = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                count += (1 if selection.alias else 0) + self.aliases(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                count += self.aliases(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                count += self.fragment(selection.name.value, self.aliases, 0)
            if count > self.limit:
                raise _OverLimit
        return count

    def repeats(self, selection_set: SelectionSetNode | None) -> Counter[str]:
        """How often each response key is selected in ``selection_set``, with the fields
        its fragments bring: each fragment once however often it is spread there, as
        graphql-core compares them. Over ``limit`` raises with the key."""
        counts: Counter[str] = Counter()

        def add(key: str, times: int) -> None:
            counts[key] += times
            if counts[key] > self.limit:
                raise _OverLimit(key)

        spread: set[str] = set()
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                add((selection.alias or selection.name).value, 1)
                self.repeats(selection.selection_set)  # a selection set of its own
                continue
            if isinstance(selection, InlineFragmentNode):
                brought = self.repeats(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                if selection.name.value in spread:
                    continue
                spread.add(selection.name.value)
                brought = self.fragment(selection.name.value, self.repeats, Counter())
            for key, times in brought.items():
                add(key, times)
        return counts

    def fragment(self, name: str, measure: Callable[[SelectionSetNode | None], T], nothing: T) -> T:
        """The fragment's measure, taken once; ``nothing`` for what is not followed."""
        if name in self.known:
            known: T = self.known[name]
            return known
        fragment = self.fragments.get(name)
        # A cycle (validation refuses it), or a chain of fragments too long to follow
        # within Python's recursion limit (each link adds no depth).
        if fragment is None or name in self.open or len(self.open) > _DEEPEST:
            return nothing
        self.open.add(name)
        try:
            found = self.known[name] = measure(fragment.selection_set)
        finally:
            self.open.discard(name)
        return found


def parts(
    document: DocumentNode,
) -> tuple[dict[str, FragmentDefinitionNode], Sequence[OperationDefinitionNode]]:
    """A document's fragments by name, and its operations."""
    definitions = document.definitions
    fragments = {d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in definitions if isinstance(d, OperationDefinitionNode)]
    return fragments, operations


def depth_limit(max_depth: int) -> type[ValidationRule]:
    class DepthLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            fragments, operations = parts(context.document)
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
    class AliasLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            fragments, operations = parts(context.document)
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


def repeats_over(document: DocumentNode) -> str | None:
    """The first response key selected more than MAX_REPEATS times in one selection set
    of the document's operations or fragments (``_Measure.repeats``), or None."""
    fragments, operations = parts(document)
    measure = _Measure(fragments, MAX_REPEATS)
    try:
        for operation in operations:
            measure.repeats(operation.selection_set)
        nothing: Counter[str] = Counter()
        for name in fragments:
            measure.fragment(name, measure.repeats, nothing)
    except _OverLimit as over:
        return str(over)
    return None
