"""The DateTime scalar on the wire, as the contract describes it: ISO-8601 in UTC with
milliseconds and a Z (2026-11-24T10:15:30.123Z), on every path that writes one."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from tests import factories
from tests.conftest import Clients, Server
from tests.wsclient import GraphQLWS

SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")

EVERYTHING = """
query($t: ID!, $m: ID!) {
  me { createdAt }
  thread(threadId: $t) {
    createdAt updatedAt lastMessageAt
    participants { edges { node { joinedAt } } }
  }
  message(messageId: $m) { createdAt editedAt edits { editedAt } }
  mySessions { connectedAt lastSeenAt }
}
"""


def stamps(value: Any) -> list[str]:
    """Every string under a key ending in "At", or under "at"."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if (key == "at" or key.endswith("At")) and isinstance(inner, str):
                found.append(inner)
            else:
                found.extend(stamps(inner))
    elif isinstance(value, list):
        for inner in value:
            found.extend(stamps(inner))
    return found


def assert_wire_format(values: list[str]) -> None:
    now = datetime.now(UTC)
    for value in values:
        assert SHAPE.fullmatch(value), value
        # UTC, not the server's local time written with a Z.
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        assert abs(moment - now) < timedelta(minutes=10), value


async def test_every_datetime_in_queries_and_events_is_utc_with_milliseconds_and_z(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    ws = await GraphQLWS.connect(server.ws_url, alice.token)
    await ws.subscribe(
        "subscription($t: ID!) { threadEvents(threadId: $t, afterSeq: 0) {"
        " at ... on MessageCreated { message { createdAt } } } }",
        {"t": tid},
    )
    sent = await factories.send(alice, tid, "first")
    await alice.gql(
        "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }",
        {"m": sent["id"], "b": "second"},
    )
    data = await alice.gql(EVERYTHING, {"t": tid, "m": sent["id"]})
    values = stamps(data)
    # me, thread (3), 2 participants, message (2), its edit, the session (2).
    assert len(values) == 11, data
    event = (await ws.next())["payload"]["data"]["threadEvents"]
    values += stamps(event)
    assert len(values) == 13, event
    assert_wire_format(values)
    await ws.close()
