"""A change of a user's system role reaches their live sockets.

A socket's viewer, and the access of each stream on it, were decided with the
role it had when it opened: a system ADMIN follows threads they are not in. So
every role change (setUserRole, `threadline users set-role`, Clerk's
`public_metadata.role`) closes the user's sockets with 4403, on every process;
the client reconnects and every stream is checked anew.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests import factories
from tests.conftest import BACKEND, DEV_SECRET, Api, Clients, Server
from tests.deployment import threadline
from tests.test_clerk_webhooks import T0, as_user, clerk_id, deliver, user_event
from tests.wsclient import GraphQLWS
from threadline.auth.tokens import mint_dev_token
from threadline.config import Settings
from threadline.models import SystemRole
from threadline.services import users

SET_ROLE = "mutation($u: ID!, $r: SystemRole!) { setUserRole(userId: $u, role: $r) { role } }"
THREAD = "query($t: ID!) { thread(threadId: $t) { id myRole } }"
TYPING = "mutation($t: ID!, $on: Boolean!) { setTyping(threadId: $t, isTyping: $on) }"
# The same selection for every viewer: served by the shared fan-out.
SHARED_EVENTS = """subscription($t: ID!, $a: Int) { threadEvents(threadId: $t, afterSeq: $a) {
  seq ... on MessageCreated { message { body } } } }"""
# myRole depends on the viewer: served per viewer.
VIEWER_EVENTS = """subscription($t: ID!) { threadEvents(threadId: $t) {
  seq ... on MessageCreated { message { body thread { myRole } } } } }"""
ACTIVITY = """subscription($t: ID!) { threadActivity(threadId: $t) {
  __typename ... on TypingChanged { isTyping } } }"""


async def make_owner(server: Server, api: Api) -> None:
    """The first OWNER, as `threadline users set-role` makes them (before any socket)."""
    async with server.runtime.db.transaction("test_set_role") as uow:
        await users.set_role_by_username(uow, str(api.username), SystemRole.OWNER)
    server.runtime.forget_viewers(clerk_user_ids=[f"dev_{api.username}"])


async def closed_with(ws: GraphQLWS, timeout: float = 10) -> int | None:
    """The close code once the server closes the socket; fails if a frame comes first."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            frame = await asyncio.wait_for(ws.conn.recv(), timeout)
            assert '"ping"' in str(frame), f"a frame after the role change: {frame!r}"
    return closed.value.rcvd.code if closed.value.rcvd else None


async def bodies_until(ws: GraphQLWS, count: int) -> list[Any]:
    got = []
    for _ in range(count):
        message = await ws.next()
        assert message["type"] == "next", message
        got.append(message["payload"]["data"])
    return got


async def test_a_demoted_admin_loses_the_live_streams_of_threads_they_are_not_in(
    server: Server, clients: Clients
) -> None:
    alice, bob, erin = await clients.users("alice", "bob", "erin")
    await make_owner(server, alice)
    await alice.gql(SET_ROLE, {"u": erin.id, "r": "ADMIN"})
    tid = await factories.thread(alice, bob, title="Not erin's")
    ws = await GraphQLWS.connect(server.ws_url, erin.token)
    await ws.subscribe(SHARED_EVENTS, {"t": tid, "a": None})
    await ws.subscribe(VIEWER_EVENTS, {"t": tid})
    await ws.subscribe(ACTIVITY, {"t": tid})
    await asyncio.sleep(0.5)
    await factories.send(alice, tid, "before")
    await alice.gql(TYPING, {"t": tid, "on": True})
    await alice.gql(TYPING, {"t": tid, "on": False})  # no expiry frame to come later
    kinds = sorted(str(sorted(d)) for d in await bodies_until(ws, 4))
    assert kinds == ["['threadActivity']"] * 2 + ["['threadEvents']"] * 2

    await alice.gql(SET_ROLE, {"u": erin.id, "r": "MEMBER"})
    assert await closed_with(ws) == 4403

    # Reconnecting with the same token: the new role, so no way back in.
    assert await erin.error(THREAD, {"t": tid}) == "NOT_FOUND"
    again = await GraphQLWS.connect(server.ws_url, erin.token)
    try:
        for query in (SHARED_EVENTS, VIEWER_EVENTS, ACTIVITY):
            await again.subscribe(query, {"t": tid})
            refused = await again.next()
            assert refused["type"] == "error", refused
            assert refused["payload"][0]["extensions"]["code"] == "NOT_FOUND"
    finally:
        await again.close()


async def test_a_participant_whose_role_changes_reconnects_and_resumes_with_after_seq(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    await make_owner(server, alice)
    tid = await factories.thread(alice, bob)
    await factories.send(alice, tid, "one")
    last = 1
    for role in ("ADMIN", "MEMBER"):
        ws = await GraphQLWS.connect(server.ws_url, bob.token)
        await ws.subscribe(SHARED_EVENTS, {"t": tid, "a": last})
        await asyncio.sleep(0.3)
        await alice.gql(SET_ROLE, {"u": bob.id, "r": role})
        assert await closed_with(ws) == 4403
        await factories.send(alice, tid, f"while away ({role})")
        # The client reconnects and resumes from the last seq it saw: nothing lost.
        ws = await GraphQLWS.connect(server.ws_url, bob.token)
        try:
            await ws.subscribe(SHARED_EVENTS, {"t": tid, "a": last})
            event = (await bodies_until(ws, 1))[0]["threadEvents"]
            assert event == {"seq": last + 1, "message": {"body": f"while away ({role})"}}
            last += 1
        finally:
            await ws.close()
        assert (await bob.gql("{ me { role } }"))["me"]["role"] == role
        # A system ADMIN acts as thread ADMIN; as a MEMBER the thread stays theirs.
        assert (await bob.gql(THREAD, {"t": tid}))["thread"]["myRole"] == role


async def test_the_same_role_again_leaves_the_sockets_open(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    await make_owner(server, alice)
    tid = await factories.thread(alice, bob)
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    try:
        await ws.subscribe(SHARED_EVENTS, {"t": tid, "a": 0})
        await asyncio.sleep(0.3)
        await alice.gql(SET_ROLE, {"u": bob.id, "r": "MEMBER"})  # already MEMBER
        await factories.send(alice, tid, "still here")
        event = (await bodies_until(ws, 1))[0]["threadEvents"]
        assert event["message"] == {"body": "still here"}
    finally:
        await ws.close()


async def test_a_role_from_clerk_public_metadata_closes_the_users_sockets(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    alice = await clients.user("alice")
    user_id = clerk_id()
    admin = {"role": "admin"}
    await deliver(server, http, user_event(user_id, public_metadata=admin))
    ada = as_user(clients, mint_dev_token(DEV_SECRET, user_id, "ada"))
    tid = await factories.thread(alice, title="Not ada's")
    assert (await ada.gql(THREAD, {"t": tid}))["thread"]["myRole"] == "ADMIN"
    ws = await GraphQLWS.connect(server.ws_url, ada.token)
    await ws.subscribe(SHARED_EVENTS, {"t": tid, "a": 0})
    await asyncio.sleep(0.3)
    # A profile update that keeps the role closes nothing.
    same = user_event(user_id, event_type="user.updated", updated_at=T0 + 1, public_metadata=admin)
    assert (await deliver(server, http, same)).status_code == 200
    await factories.send(alice, tid, "seen")
    assert (await bodies_until(ws, 1))[0]["threadEvents"]["message"] == {"body": "seen"}
    demoted = user_event(
        user_id, event_type="user.updated", updated_at=T0 + 2, public_metadata={"role": "member"}
    )
    assert (await deliver(server, http, demoted)).status_code == 200
    assert await closed_with(ws) == 4403
    assert await ada.error(THREAD, {"t": tid}) == "NOT_FOUND"


@pytest.mark.skipif(BACKEND != "postgres", reason="the command reaches servers through Redis")
async def test_users_set_role_closes_the_users_sockets_on_the_running_server(
    settings: Settings, server: Server, clients: Clients, tmp_path: Path
) -> None:
    """The command is another process: the signal crosses to the server through Redis."""
    alice, erin = await clients.users("alice", "erin")
    assert settings.redis_url is not None

    async def set_role(role: str) -> None:
        done = await asyncio.to_thread(
            threadline,
            "users",
            "set-role",
            "erin",
            role,
            database_url=settings.database_url,
            tmp_path=tmp_path,
            REDIS_URL=str(settings.redis_url),
        )
        assert done.returncode == 0, done.stderr

    await set_role("admin")
    tid = await factories.thread(alice, title="Not erin's")
    for _ in range(100):  # once the server heard it (or its viewer cache expired)
        if not (await erin.raw(THREAD, {"t": tid})).get("errors"):
            break
        await asyncio.sleep(0.1)
    ws = await GraphQLWS.connect(server.ws_url, erin.token)
    await ws.subscribe(SHARED_EVENTS, {"t": tid, "a": 0})
    await asyncio.sleep(0.3)
    await factories.send(alice, tid, "seen")
    assert (await bodies_until(ws, 1))[0]["threadEvents"]["message"] == {"body": "seen"}
    await set_role("member")
    assert await closed_with(ws) == 4403
    assert await erin.error(THREAD, {"t": tid}) == "NOT_FOUND"
