"""A hostile client against accounts, authentication and per-client limits.

Each test is one attack that once worked: what a signed-in (or anonymous) client could
do to another user's privacy, to the server's bookkeeping of who is connected, or to
its memory and CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import Clients, Server
from tests.live import until
from tests.test_ws_protocol import receive

LEGACY = "graphql-ws"
TRANSPORT = "graphql-transport-ws"


async def _init(conn: ClientConnection, token: str) -> dict[str, Any]:
    init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
    await conn.send(json.dumps(init))
    return await receive(conn)


@pytest.mark.any_backend
async def test_a_second_legacy_connection_init_leaves_no_session_open_after_the_socket_closes(
    server: Server, clients: Clients
) -> None:
    """graphql-transport-ws closes a socket that sends connection_init twice (4429);
    the legacy protocol acknowledged every one, opening a session row and a presence
    lease each time, and the socket's end closed only the last: the others stayed
    "connected" in mySessions (and kept the user ONLINE) after the socket was gone."""
    alice = await clients.user("alice")
    assert alice.token is not None
    graphql = server.app.state.graphql
    conn = await websockets.connect(server.ws_url, subprotocols=[LEGACY])  # type: ignore[list-item]
    assert (await _init(conn, alice.token))["type"] == "connection_ack"
    await conn.send(json.dumps({"type": "connection_init", "payload": {"token": alice.token}}))
    # Acknowledged again, or refused with a close: either way the socket then ends.
    with contextlib.suppress(websockets.ConnectionClosed):
        await receive(conn)
    await conn.close()
    await until(lambda: not graphql.connections)
    # The socket's end closes its session row just after it leaves `connections`:
    # asked until every row is closed, for at most 5 seconds.
    deadline = time.monotonic() + 5
    while True:
        sessions = (await alice.gql("{ mySessions { id disconnectedAt } }"))["mySessions"]
        still_open = [s for s in sessions if s["disconnectedAt"] is None]
        if not still_open or time.monotonic() > deadline:
            break
    assert sessions, "the socket opened no session at all"
    assert still_open == []


def fanned_fragments(levels: int) -> str:
    """A document of ~10 tokens a level whose fragments, spelled out, are 2**levels
    spreads: each fragment spreads the next one twice."""
    fragments = " ".join(
        f"fragment F{i} on User {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)
    )
    return f"{{ me {{ ...F0 }} }} {fragments} fragment F{levels} on User {{ id }}"


async def test_fragments_that_fan_out_are_checked_in_linear_time(
    server: Server, clients: Clients
) -> None:
    """The depth and alias limits followed every fragment spread anew, on the event
    loop: 21 levels (about 220 tokens, well under MAX_TOKENS) took seconds, each
    further level doubled it, and 40 levels stopped the process for good. Anyone could
    send it, signed in or not: the limits run before any field is authorised."""
    anonymous = clients.anonymous
    started = time.monotonic()
    body = await anonymous.raw(fanned_fragments(21))
    elapsed = time.monotonic() - started
    # Valid (it selects only `me { id }`), so it runs and is refused for want of a token.
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", body
    assert elapsed < 2.0, f"validating 220 tokens took {elapsed:.1f}s"
    alice = await clients.user("alice")
    assert (await alice.gql(fanned_fragments(21)))["me"]["id"] == alice.id


async def test_one_field_repeated_over_50_times_in_one_place_is_refused_before_validation(
    clients: Clients,
) -> None:
    """graphql-core checks that fields of one response key can merge by comparing them
    in pairs: ~4,800 tokens repeating `me { __typename }` took 0.4-1.4 s of event loop
    each, signed out. Over 50 of one key in one selection set (the fields fragments
    bring counted) is refused before that check runs."""
    anonymous = clients.anonymous
    body = await anonymous.raw("{ " + " ".join(["me { __typename }"] * 1200) + " }")
    assert "'me' is selected over 50 times" in body["errors"][0]["message"], body
    fragments = " ".join(f"fragment F{i} on Query {{ me {{ id }} }}" for i in range(60))
    spreads = " ".join(f"...F{i}" for i in range(60))
    body = await anonymous.raw(f"{{ {spreads} }} {fragments}")
    assert "'me' is selected over 50 times" in body["errors"][0]["message"], body
    # What clients send: a key in a few fragments, a fragment spread more than once.
    alice = await clients.user("alice")
    fragments = " ".join(f"fragment F{i} on User {{ id }}" for i in range(50))
    spreads = " ".join(f"...F{i} ...F{i}" for i in range(50))
    assert (await alice.gql(f"{{ me {{ {spreads} }} }} {fragments}"))["me"]["id"] == alice.id


async def test_a_long_chain_of_fragments_is_refused_cleanly(clients: Clients) -> None:
    """Each link of the chain adds no depth, and the depth limit followed it link by
    link into Python's recursion limit. Now it stops following (graphql-core's own
    validation then gives up on the chain: a clean BAD_USER_INPUT, not an internal
    error), and the next request is answered."""
    alice = await clients.user("alice")
    chain = " ".join(f"fragment F{i} on User {{ ...F{i + 1} }}" for i in range(600))
    body = await alice.raw(f"{{ me {{ ...F0 }} }} {chain} fragment F600 on User {{ id }}")
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    assert (await alice.gql("{ me { id } }"))["me"]["id"] == alice.id


async def _refusal_code(server: Server, token: str) -> int | None:
    """The close code a graphql-transport-ws connection_init with ``token`` gets."""
    async with websockets.connect(server.ws_url, subprotocols=[TRANSPORT]) as conn:  # type: ignore[list-item]
        await conn.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(conn.recv(), 10)
    return conn.close_code


@pytest.mark.parametrize("ending", ["session.ended", "user.deleted"])
async def test_a_connection_init_for_an_ended_session_or_deleted_user_closes_with_4401(
    server: Server, http: httpx.AsyncClient, clients: Clients, ending: str
) -> None:
    """CONTRACT.md: 4401 when the Clerk session ended or the user was deleted (the
    graphql-ws client stops: the user signs in again); 4403 only for a token missing,
    bad or expired (the client reconnects with a fresh one). A still-valid token of an
    ended session or deleted user, at connection_init, was answered 4403: the client
    retried for ever with tokens the server will never take."""
    from tests.test_clerk_webhooks import (
        clerk_id,
        deleted_event,
        deliver,
        session_event,
        token_with_session,
        user_event,
    )

    user_id = clerk_id()
    await deliver(server, http, user_event(user_id))
    token = token_with_session(user_id, "ada", "sess_gone")
    assert await _init_answer(server, token) == "connection_ack"
    event = (
        session_event("sess_gone", user_id) if ending == "session.ended" else deleted_event(user_id)
    )
    assert (await deliver(server, http, event)).status_code == 200
    assert await _refusal_code(server, token) == 4401
    # A bad token is still 4403.
    assert await _refusal_code(server, "not-a-token") == 4403


async def _init_answer(server: Server, token: str) -> str:
    async with websockets.connect(server.ws_url, subprotocols=[TRANSPORT]) as conn:  # type: ignore[list-item]
        return str((await _init(conn, token))["type"])


SET_ROLE = "mutation($u: ID!, $r: SystemRole!) { setUserRole(userId: $u, role: $r) { role } }"


async def test_two_owners_stepping_down_at_once_leave_one_owner(
    server: Server, clients: Clients
) -> None:
    """CONTRACT.md: the last OWNER cannot be demoted. Each OWNER's step-down counted
    the other OWNERs before either committed: both saw one, both stepped down, and the
    deployment was left with no OWNER (only the command line can make one again)."""
    from threadline.models import SystemRole
    from threadline.services import users

    alice, bob = await clients.users("alice", "bob")
    # A race: tried several times, each from two OWNERs again.
    for _ in range(10):
        for api in (alice, bob):
            async with server.runtime.db.transaction("test_make_owner") as uow:
                await users.set_role_by_username(uow, str(api.username), SystemRole.OWNER)
        server.runtime.forget_viewers(user_ids={uuid.UUID(alice.id), uuid.UUID(bob.id)})
        answers = await asyncio.gather(
            alice.raw(SET_ROLE, {"u": alice.id, "r": "MEMBER"}),
            bob.raw(SET_ROLE, {"u": bob.id, "r": "MEMBER"}),
        )
        roles = [(await api.gql("{ me { role } }"))["me"]["role"] for api in (alice, bob)]
        assert "OWNER" in roles, answers
        refused = [a for a in answers if a.get("errors")]
        assert [a["errors"][0]["extensions"]["code"] for a in refused] == ["CONFLICT"], answers
