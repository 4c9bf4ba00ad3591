"""Threads: creating them, direct threads, membership and roles, and who may do what."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests import factories
from tests.conftest import Api, Clients, Server
from threadline.models import SystemRole
from threadline.services import users

THREAD = """
query($t: ID!) {
  thread(threadId: $t) {
    id title description isDirect myRole muted
    participants { totalCount edges { node { role user { id } } } }
  }
}
"""
CREATE = """
mutation($i: CreateThreadInput!) {
  createThread(input: $i) {
    id title description isDirect myRole lastSeq
    participants { totalCount edges { node { role user { id } } } }
  }
}
"""
DIRECT = "mutation($u: ID!) { createDirectThread(userId: $u) { id isDirect myRole } }"
UPDATE = """
mutation($t: ID!, $i: UpdateThreadInput!) {
  updateThread(threadId: $t, input: $i) { title description }
}
"""
DELETE = "mutation($t: ID!) { deleteThread(threadId: $t) }"
ADD = """
mutation($t: ID!, $u: ID!, $r: ThreadRole) {
  addParticipant(threadId: $t, userId: $u, role: $r) { role user { id } }
}
"""
REMOVE = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"
SET_ROLE = """
mutation($t: ID!, $u: ID!, $r: ThreadRole!) {
  setParticipantRole(threadId: $t, userId: $u, role: $r) { role user { id } }
}
"""
LEAVE = "mutation($t: ID!) { leaveThread(threadId: $t) }"
PARTICIPANT_ROLES = """
query($t: ID!) { thread(threadId: $t) { participants { edges { node { user { id role } } } } } }
"""
MUTE = "mutation($t: ID!, $m: Boolean!) { muteThread(threadId: $t, muted: $m) { id muted } }"
MY_THREADS = """
query($first: Int, $after: String) {
  threads(first: $first, after: $after) {
    edges { node { id title } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
SET_USER_ROLE = (
    "mutation($u: ID!, $r: SystemRole!) { setUserRole(userId: $u, role: $r) { id role } }"
)


async def promote(server: Server, api: Api, role: str) -> None:
    """What `threadline users set-role` does, then forget the cached viewer."""
    async with server.runtime.db.transaction("test_set_role") as uow:
        await users.set_role_by_username(uow, str(api.username), SystemRole(role))
    server.runtime.forget_viewers(clerk_user_ids=[f"dev_{api.username}"])


def roles_by_user(thread: dict[str, Any]) -> dict[str, str]:
    return {e["node"]["user"]["id"]: e["node"]["role"] for e in thread["participants"]["edges"]}


async def role_in(api: Api, thread_id: str, user: Api) -> str | None:
    data = await api.gql(THREAD, {"t": thread_id})
    return roles_by_user(data["thread"]).get(user.id)


# ---------------------------------------------------------------- creating


async def test_create_thread_makes_the_caller_owner_and_the_others_members(
    clients: Clients,
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    data = await alice.gql(
        CREATE,
        {"i": {"title": "  Plans ", "description": "Q3", "participantIds": [bob.id, carol.id]}},
    )
    thread = data["createThread"]
    assert thread["title"] == "Plans"
    assert thread["description"] == "Q3"
    assert thread["isDirect"] is False
    assert thread["myRole"] == "OWNER"
    assert thread["lastSeq"] == 0
    assert thread["participants"]["totalCount"] == 3
    assert roles_by_user(thread) == {alice.id: "OWNER", bob.id: "MEMBER", carol.id: "MEMBER"}
    seen_by_bob = (await bob.gql(THREAD, {"t": thread["id"]}))["thread"]
    assert seen_by_bob["myRole"] == "MEMBER"


async def test_create_thread_with_an_unknown_participant_is_not_found(clients: Clients) -> None:
    alice = await clients.user("alice")
    missing = "00000000-0000-4000-8000-000000000000"
    code = await alice.error(CREATE, {"i": {"title": "Room", "participantIds": [missing]}})
    assert code == "NOT_FOUND"


async def test_create_direct_thread_returns_the_same_thread_when_repeated(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    first = (await alice.gql(DIRECT, {"u": bob.id}))["createDirectThread"]
    again = (await alice.gql(DIRECT, {"u": bob.id}))["createDirectThread"]
    from_bob = (await bob.gql(DIRECT, {"u": alice.id}))["createDirectThread"]
    assert first["isDirect"] is True
    assert first["id"] == again["id"] == from_bob["id"]


async def test_concurrent_create_direct_thread_from_both_sides_gives_one_thread(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    calls = [
        alice.gql(DIRECT, {"u": bob.id}) if i % 2 else bob.gql(DIRECT, {"u": alice.id})
        for i in range(10)
    ]
    results = await asyncio.gather(*calls)
    ids = {r["createDirectThread"]["id"] for r in results}
    assert len(ids) == 1
    listed = (await alice.gql(MY_THREADS))["threads"]["edges"]
    assert [e["node"]["id"] for e in listed] == list(ids)


async def test_a_direct_thread_with_oneself_is_bad_input(clients: Clients) -> None:
    alice = await clients.user("alice")
    assert await alice.error(DIRECT, {"u": alice.id}) == "BAD_USER_INPUT"


async def test_nobody_removes_a_direct_threads_member_so_no_removal_can_be_undone(
    server: Server, clients: Clients
) -> None:
    """createDirectThread brings back whoever left; were the other member able to
    remove them, that call would undo the removal. So members only leave."""
    bob, carol, erin = await clients.users("bob", "carol", "erin")
    await promote(server, erin, "OWNER")  # acts as thread OWNER everywhere
    direct = (await carol.gql(DIRECT, {"u": bob.id}))["createDirectThread"]["id"]
    for remover in (bob, erin):
        body = await remover.raw(REMOVE, {"t": direct, "u": carol.id})
        assert body["errors"][0]["extensions"]["code"] == "CONFLICT"
        assert "can only leave" in body["errors"][0]["message"]
    await factories.send(bob, direct, "still talking")
    read = "query($t: ID!) { messages(threadId: $t) { edges { node { body } } } }"
    edges = (await carol.gql(read, {"t": direct}))["messages"]["edges"]
    assert [e["node"]["body"] for e in edges] == ["still talking"]
    assert roles_by_user((await carol.gql(THREAD, {"t": direct}))["thread"]) == {
        bob.id: "OWNER",
        carol.id: "OWNER",
    }
    # Leaving stays open, by either mutation; createDirectThread then rejoins.
    assert (await carol.gql(REMOVE, {"t": direct, "u": carol.id}))["removeParticipant"] == carol.id
    assert await carol.error(THREAD, {"t": direct}) == "NOT_FOUND"
    back = (await carol.gql(DIRECT, {"u": bob.id}))["createDirectThread"]
    assert back == {"id": direct, "isDirect": True, "myRole": "OWNER"}
    await bob.gql(LEAVE, {"t": direct})
    assert await bob.error(THREAD, {"t": direct}) == "NOT_FOUND"


# ---------------------------------------------------------------- updating and deleting


async def test_update_thread_is_allowed_to_a_thread_admin(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice)
    await alice.gql(ADD, {"t": thread_id, "u": bob.id, "r": "ADMIN"})
    data = await bob.gql(UPDATE, {"t": thread_id, "i": {"title": "Renamed", "description": "d"}})
    assert data["updateThread"] == {"title": "Renamed", "description": "d"}


async def test_update_thread_is_forbidden_to_a_member_and_not_found_for_an_outsider(
    clients: Clients,
) -> None:
    alice, bob, eve = await clients.users("alice", "bob", "eve")
    thread_id = await factories.thread(alice, bob)
    assert await bob.error(UPDATE, {"t": thread_id, "i": {"title": "No"}}) == "FORBIDDEN"
    assert await eve.error(UPDATE, {"t": thread_id, "i": {"title": "No"}}) == "NOT_FOUND"
    assert (await alice.gql(THREAD, {"t": thread_id}))["thread"]["title"] == "Room"


async def test_delete_thread_is_for_the_owner_and_the_thread_is_gone_afterwards(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice)
    await alice.gql(ADD, {"t": thread_id, "u": bob.id, "r": "ADMIN"})
    assert await bob.error(DELETE, {"t": thread_id}) == "FORBIDDEN"
    assert (await alice.gql(DELETE, {"t": thread_id}))["deleteThread"] == thread_id
    assert await alice.error(THREAD, {"t": thread_id}) == "NOT_FOUND"
    assert await bob.error(THREAD, {"t": thread_id}) == "NOT_FOUND"
    assert (await alice.gql(MY_THREADS))["threads"]["edges"] == []


# ---------------------------------------------------------------- membership


async def test_add_participant_adds_with_the_given_role(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice)
    added = (await alice.gql(ADD, {"t": thread_id, "u": bob.id, "r": "ADMIN"}))["addParticipant"]
    assert added == {"role": "ADMIN", "user": {"id": bob.id}}
    assert (await bob.gql(THREAD, {"t": thread_id}))["thread"]["myRole"] == "ADMIN"


async def test_adding_someone_twice_is_a_conflict(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    assert await alice.error(ADD, {"t": thread_id, "u": bob.id}) == "CONFLICT"


async def test_an_admin_cannot_grant_a_role_above_their_own(clients: Clients) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice)
    await alice.gql(ADD, {"t": thread_id, "u": bob.id, "r": "ADMIN"})
    assert await bob.error(ADD, {"t": thread_id, "u": carol.id, "r": "OWNER"}) == "FORBIDDEN"


async def test_remove_participant_takes_the_thread_away_from_them(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    removed = await alice.gql(REMOVE, {"t": thread_id, "u": bob.id})
    assert removed["removeParticipant"] == bob.id
    assert await bob.error(THREAD, {"t": thread_id}) == "NOT_FOUND"


async def test_a_member_cannot_remove_anyone(clients: Clients) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob, carol)
    assert await bob.error(REMOVE, {"t": thread_id, "u": carol.id}) == "FORBIDDEN"


async def test_set_participant_role_promotes_and_demotes(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    promoted = await alice.gql(SET_ROLE, {"t": thread_id, "u": bob.id, "r": "OWNER"})
    assert promoted["setParticipantRole"]["role"] == "OWNER"
    # With a second OWNER, the first may step down.
    demoted = await alice.gql(SET_ROLE, {"t": thread_id, "u": alice.id, "r": "MEMBER"})
    assert demoted["setParticipantRole"]["role"] == "MEMBER"
    assert await role_in(bob, thread_id, alice) == "MEMBER"


async def test_the_last_owner_can_neither_be_demoted_nor_leave(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    assert await alice.error(SET_ROLE, {"t": thread_id, "u": alice.id, "r": "ADMIN"}) == "CONFLICT"
    assert await alice.error(LEAVE, {"t": thread_id}) == "CONFLICT"
    assert await role_in(alice, thread_id, alice) == "OWNER"


async def test_leave_thread_removes_the_caller(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    assert (await bob.gql(LEAVE, {"t": thread_id}))["leaveThread"] == thread_id
    assert await bob.error(THREAD, {"t": thread_id}) == "NOT_FOUND"
    data = await alice.gql(THREAD, {"t": thread_id})
    assert data["thread"]["participants"]["totalCount"] == 1


async def test_an_owner_can_leave_once_another_owner_exists(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    await alice.gql(SET_ROLE, {"t": thread_id, "u": bob.id, "r": "OWNER"})
    await alice.gql(LEAVE, {"t": thread_id})
    assert await role_in(bob, thread_id, bob) == "OWNER"


async def test_mute_thread_sets_and_clears_muted_for_the_caller_only(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    assert (await bob.gql(MUTE, {"t": thread_id, "m": True}))["muteThread"]["muted"] is True
    assert (await bob.gql(THREAD, {"t": thread_id}))["thread"]["muted"] is True
    assert (await alice.gql(THREAD, {"t": thread_id}))["thread"]["muted"] is False
    assert (await bob.gql(MUTE, {"t": thread_id, "m": False}))["muteThread"]["muted"] is False


# ---------------------------------------------------------------- listing


async def test_threads_are_listed_by_last_activity_and_page_without_overlap(
    clients: Clients,
) -> None:
    alice = await clients.user("alice")
    ids = [await factories.thread(alice, title=f"T{i}") for i in range(5)]
    # A message makes the oldest thread the most recently active.
    await factories.send(alice, ids[0])
    expected = [ids[0], ids[4], ids[3], ids[2], ids[1]]
    seen: list[str] = []
    after = None
    for _ in range(3):
        page = (await alice.gql(MY_THREADS, {"first": 2, "after": after}))["threads"]
        seen += [e["node"]["id"] for e in page["edges"]]
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
    assert seen == expected


async def test_threads_lists_only_the_callers_threads(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    mine = await factories.thread(alice)
    await factories.thread(bob)
    listed = (await alice.gql(MY_THREADS))["threads"]["edges"]
    assert [e["node"]["id"] for e in listed] == [mine]


async def test_participants_page_with_a_total_count(clients: Clients) -> None:
    people = [await clients.user(n) for n in ("alice", "bob", "carol", "dave")]
    thread_id = await factories.thread(*people)
    query = """
    query($t: ID!, $after: String) {
      thread(threadId: $t) {
        participants(first: 3, after: $after) {
          totalCount edges { node { user { id } } } pageInfo { hasNextPage endCursor }
        }
      }
    }
    """
    first = (await people[0].gql(query, {"t": thread_id}))["thread"]["participants"]
    assert first["totalCount"] == 4
    assert len(first["edges"]) == 3
    assert first["pageInfo"]["hasNextPage"] is True
    after = first["pageInfo"]["endCursor"]
    rest = (await people[0].gql(query, {"t": thread_id, "after": after}))["thread"]
    second = rest["participants"]
    assert second["totalCount"] == 4
    assert second["pageInfo"]["hasNextPage"] is False
    seen = [e["node"]["user"]["id"] for e in first["edges"] + second["edges"]]
    assert sorted(seen) == sorted(p.id for p in people)


# ---------------------------------------------------------------- system roles


async def test_a_system_admin_acts_as_thread_admin_in_a_thread_they_are_not_in(
    server: Server, clients: Clients
) -> None:
    alice, root = await clients.user("alice"), await clients.user("root")
    thread_id = await factories.thread(alice)
    await promote(server, root, "ADMIN")
    seen = (await root.gql(THREAD, {"t": thread_id}))["thread"]
    assert seen["myRole"] == "ADMIN"
    updated = await root.gql(UPDATE, {"t": thread_id, "i": {"title": "Moderated"}})
    assert updated["updateThread"]["title"] == "Moderated"
    assert await root.error(DELETE, {"t": thread_id}) == "FORBIDDEN"


async def test_a_system_owner_acts_as_thread_owner_and_may_delete_any_thread(
    server: Server, clients: Clients
) -> None:
    alice, root = await clients.user("alice"), await clients.user("root")
    thread_id = await factories.thread(alice)
    await promote(server, root, "OWNER")
    assert (await root.gql(THREAD, {"t": thread_id}))["thread"]["myRole"] == "OWNER"
    assert (await root.gql(DELETE, {"t": thread_id}))["deleteThread"] == thread_id
    assert await alice.error(THREAD, {"t": thread_id}) == "NOT_FOUND"


async def test_set_user_role_needs_a_system_owner(server: Server, clients: Clients) -> None:
    member, admin, target = await clients.users("member", "admin", "target")
    await promote(server, admin, "ADMIN")
    assert await member.error(SET_USER_ROLE, {"u": target.id, "r": "ADMIN"}) == "FORBIDDEN"
    assert await admin.error(SET_USER_ROLE, {"u": target.id, "r": "ADMIN"}) == "FORBIDDEN"


async def test_a_role_set_by_a_system_owner_takes_effect_at_once(
    server: Server, clients: Clients
) -> None:
    root, alice, bob = await clients.users("root", "alice", "bob")
    await promote(server, root, "OWNER")
    not_bobs = await factories.thread(alice)
    shared = await factories.thread(alice, bob)

    async def bobs_role_seen_by_alice() -> str:
        data = await alice.gql(PARTICIPANT_ROLES, {"t": shared})
        edges = data["thread"]["participants"]["edges"]
        return str(
            next(e["node"]["user"]["role"] for e in edges if e["node"]["user"]["id"] == bob.id)
        )

    assert await bob.error(THREAD, {"t": not_bobs}) == "NOT_FOUND"
    assert await bobs_role_seen_by_alice() == "MEMBER"
    data = await root.gql(SET_USER_ROLE, {"u": bob.id, "r": "ADMIN"})
    assert data["setUserRole"] == {"id": bob.id, "role": "ADMIN"}
    assert (await bob.gql("{ me { role } }"))["me"]["role"] == "ADMIN"
    assert (await bob.gql(THREAD, {"t": not_bobs}))["thread"]["myRole"] == "ADMIN"
    assert await bobs_role_seen_by_alice() == "ADMIN"


# ---------------------------------------------------------------- @threadRole, role by role

RANK = {"MEMBER": 1, "ADMIN": 2, "OWNER": 3}
# One field per @threadRole level; each succeeds with the data shown.
GUARDED: dict[str, tuple[str, Callable[[str], dict[str, Any]], str]] = {
    "MEMBER": (MUTE, lambda t: {"t": t, "m": True}, "muteThread"),
    "ADMIN": (UPDATE, lambda t: {"t": t, "i": {"title": "Renamed"}}, "updateThread"),
    "OWNER": (DELETE, lambda t: {"t": t}, "deleteThread"),
}


@pytest.mark.parametrize("required", ["MEMBER", "ADMIN", "OWNER"])
@pytest.mark.parametrize("caller_role", ["MEMBER", "ADMIN", "OWNER"])
async def test_thread_role_directive_allows_exactly_the_roles_at_or_above_it(
    clients: Clients, caller_role: str, required: str
) -> None:
    owner, caller = await clients.user("owner"), await clients.user("caller")
    thread_id = await factories.thread(owner)
    await owner.gql(ADD, {"t": thread_id, "u": caller.id, "r": caller_role})
    query, variables, field = GUARDED[required]
    body = await caller.raw(query, variables(thread_id))
    if RANK[caller_role] >= RANK[required]:
        assert not body.get("errors"), body
        assert body["data"][field]
    else:
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# ------------------------------------------- who may send (checked inside the write)


async def test_a_system_admin_may_send_in_a_thread_they_are_not_in(
    server: Server, clients: Clients
) -> None:
    alice, root = await clients.user("alice"), await clients.user("root")
    thread_id = await factories.thread(alice)
    assert await root.error(factories.SEND, {"i": {"threadId": thread_id, "body": "x"}}) == (
        "NOT_FOUND"
    )
    await promote(server, root, "ADMIN")
    sent = await factories.send(root, thread_id, "moderator here", clientId="m-1")
    assert sent["seq"] == 1
    again = await factories.send(root, thread_id, "moderator here", clientId="m-1")
    assert again["id"] == sent["id"]


async def test_a_removed_participant_or_a_deleted_thread_takes_no_more_messages(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    first = await factories.send(bob, thread_id, "still here", clientId="b-1")
    await alice.gql(REMOVE, {"t": thread_id, "u": bob.id})
    for body, extra in (("gone", {}), ("still here", {"clientId": "b-1"})):
        variables = {"i": {"threadId": thread_id, "body": body, **extra}}
        assert await bob.error(factories.SEND, variables) == "NOT_FOUND"
    await alice.gql(DELETE, {"t": thread_id})
    assert await alice.error(factories.SEND, {"i": {"threadId": thread_id, "body": "x"}}) == (
        "NOT_FOUND"
    )
    assert first["seq"] >= 1
