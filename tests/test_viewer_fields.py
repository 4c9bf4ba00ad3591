"""Viewer-dependent fields are marked where they are declared, and the mark is complete.

A broadcast threadEvents frame is rendered once for all subscribers when its
selection reads no marked field (``schema/viewer_fields.py``). Here every field of
a thread, to a depth, is read as two different viewers: any value that differs
must lie under a marked field, or one subscriber would be shown the other's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import graphql
import pytest

from tests import factories
from tests.conftest import Clients
from tests.deployment import variant
from threadline.config import Settings
from threadline.graphql_app import ROOTS
from threadline.schema.schema import build_schema
from threadline.schema.viewer_fields import viewer_field_names, viewer_fields

CONTRACT = graphql.build_schema((Path(__file__).parents[1] / "schema.graphql").read_text())
DEPTH = 4


def _selection(kind: graphql.GraphQLNamedType, depth: int) -> str:
    """Every field of ``kind`` without required arguments, ``depth`` levels down."""
    if isinstance(kind, graphql.GraphQLUnionType | graphql.GraphQLInterfaceType):
        possible = CONTRACT.get_possible_types(kind)
        return "__typename " + " ".join(
            f"... on {t.name} {{ {_selection(t, depth)} }}" for t in possible
        )
    assert isinstance(kind, graphql.GraphQLObjectType)
    parts = ["__typename"]
    for name, field in kind.fields.items():
        if any(graphql.is_required_argument(a) for a in field.args.values()):
            continue
        args = "(first: 2)" if "first" in field.args else ""
        inner = graphql.get_named_type(field.type)
        if graphql.is_leaf_type(inner):
            parts.append(name)
        elif depth > 1:
            parts.append(f"{name}{args} {{ {_selection(inner, depth - 1)} }}")
    return " ".join(parts)


THREAD = graphql.get_named_type(CONTRACT.get_type("Thread"))
QUERY = f"query($t: ID!) {{ thread(threadId: $t) {{ {_selection(THREAD, DEPTH)} }} }}"


def _differences(
    a: Any,
    b: Any,
    typename: str,
    path: tuple[tuple[str, str], ...],
    out: set[tuple[tuple[str, str], ...]],
) -> None:
    """Collect the (type, field) paths down to each value that differs between a and b."""
    if isinstance(a, dict) and isinstance(b, dict):
        kind = a.get("__typename", typename)
        for key in a.keys() | b.keys():
            if key != "__typename":
                _differences(a.get(key), b.get(key), kind, (*path, (kind, key)), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b, strict=True):
            _differences(x, y, typename, path, out)
    elif a != b:
        out.add(path)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Every field four levels deep in one document: over the cost limit by design.
    return variant(settings, max_query_cost=100_000_000)


async def test_every_field_that_differs_between_two_viewers_is_marked(clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    first = await factories.send(alice, tid, "one")
    await factories.send(alice, tid, "two")
    last = await factories.send(alice, tid, "three")
    for message in (first, last):
        await alice.gql(
            'mutation($m: ID!) { addReaction(messageId: $m, emoji: "👍") { id } }',
            {"m": message["id"]},
        )
    await alice.gql(
        "mutation($p: JSON) { updateMe(input: {preferences: $p}) { id } }", {"p": {"theme": "dark"}}
    )
    await bob.gql("mutation($t: ID!) { muteThread(threadId: $t, muted: true) { id } }", {"t": tid})

    async def read(api: Any) -> Any:
        return (await api.gql(QUERY, {"t": tid}))["thread"]

    # Reading a page moves the reader's delivered marker: let that settle first.
    await read(alice), await read(bob)
    await asyncio.sleep(1.5)
    alice_1, bob_1, alice_2, bob_2 = [await read(api) for api in (alice, bob, alice, bob)]
    unstable: set[tuple[tuple[str, str], ...]] = set()
    _differences(alice_1, alice_2, "Thread", (), unstable)
    _differences(bob_1, bob_2, "Thread", (), unstable)
    differing: set[tuple[tuple[str, str], ...]] = set()
    _differences(alice_1, bob_1, "Thread", (), differing)
    differing -= unstable

    marked = viewer_fields(build_schema(ROOTS))
    unmarked = [path for path in differing if not any(step in marked for step in path)]
    assert unmarked == [], f"viewer-dependent fields without READS_VIEWER: {unmarked}"
    # The comparison saw what it is for (else it would pass with no marks at all).
    seen = {step for path in differing for step in path if step in marked}
    assert {
        ("Thread", "myRole"),
        ("Thread", "muted"),
        ("Thread", "unreadCount"),
        ("ReactionGroup", "reactedByMe"),
        ("User", "preferences"),
    } <= seen


def test_the_broadcast_check_reads_the_marks_of_the_built_schema() -> None:
    schema = build_schema(ROOTS)
    names = viewer_field_names(schema)
    assert names == {field for _, field in viewer_fields(schema)}
    assert {"reactedByMe", "myRole", "preferences"} <= names
