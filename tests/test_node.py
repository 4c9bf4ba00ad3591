"""node(id): every type that implements Node is found by its id, and only by those
who may see it."""

from __future__ import annotations

import uuid

from tests import factories
from tests.conftest import Clients, Server
from tests.uploads import pdf, upload
from tests.wsclient import GraphQLWS

NODE = """
query($id: ID!) { node(id: $id) {
  __typename id
  ... on User { username }
  ... on Thread { title }
  ... on Message { body }
  ... on Attachment { filename }
  ... on Notification { kind }
  ... on Session { connectedAt }
} }
"""


async def test_node_finds_each_type_for_whoever_may_see_it(
    server: Server, clients: Clients
) -> None:
    alice, bob, mallory = await clients.users("alice", "bob", "mallory")
    tid = await factories.thread(alice, bob, title="Plans")
    message = await factories.send(alice, tid, "hello @bob")
    attachment = await upload(alice, tid, "notes.pdf", pdf())
    notifications = await bob.gql("{ notifications { edges { node { id kind } } } }")
    notification = notifications["notifications"]["edges"][0]["node"]
    ws = await GraphQLWS.connect(server.ws_url, bob.token)  # a Session row of bob's
    sessions = (await bob.gql("{ mySessions { id } }"))["mySessions"]
    assert len(sessions) == 1

    expected = {
        "User": (alice.id, "username", "alice"),
        "Thread": (tid, "title", "Plans"),
        "Message": (message["id"], "body", "hello @bob"),
        "Attachment": (attachment["id"], "filename", "notes.pdf"),
        "Notification": (notification["id"], "kind", notification["kind"]),
    }
    for typename, (node_id, field, value) in expected.items():
        viewer = alice if typename == "Attachment" else bob
        found = (await viewer.gql(NODE, {"id": node_id}))["node"]
        assert found is not None, typename
        assert (found["__typename"], found["id"], found[field]) == (typename, node_id, value)
    session = (await bob.gql(NODE, {"id": sessions[0]["id"]}))["node"]
    assert (session["__typename"], session["id"]) == ("Session", sessions[0]["id"])
    assert session["connectedAt"].endswith("Z")

    # Someone outside the thread sees users, and nothing else of it or of bob's.
    assert (await mallory.gql(NODE, {"id": alice.id}))["node"]["username"] == "alice"
    for private in [tid, message["id"], attachment["id"], notification["id"], sessions[0]["id"]]:
        assert (await mallory.gql(NODE, {"id": private}))["node"] is None, private
    await ws.close()


async def test_node_of_an_unknown_or_malformed_id_is_null(clients: Clients) -> None:
    alice = await clients.user("alice")
    assert (await alice.gql(NODE, {"id": str(uuid.uuid4())}))["node"] is None
    assert (await alice.gql(NODE, {"id": "not-a-uuid"}))["node"] is None
