"""Clerk webhooks over real HTTP, signed with the Svix library's own signer.

Every delivery is the exact bytes that were signed; the server must verify them as
they arrive, apply each Svix message once, and ignore what is late or unknown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import websockets
from sqlalchemy import func, select
from svix.webhooks import Webhook

from tests import factories
from tests.conftest import DEV_SECRET, Api, Clients, Server, start_server, stop_server
from threadline.auth.tokens import mint_dev_token
from threadline.config import Settings
from threadline.errors import Conflict
from threadline.models import SystemRole, User, WebhookDelivery
from threadline.services import users

URL = "/webhooks/clerk"
FIND = """
query($s: String) {
  users(search: $s) { edges { node { id clerkId username displayName imageUrl role deletedAt } } }
}
"""
USER = "query($id: ID!) { user(id: $id) { id username displayName imageUrl deletedAt } }"
ME = "{ me { id clerkId username displayName } }"
MESSAGES = """
query($t: ID!) { messages(threadId: $t) { edges { node { id body author { id } } } } }
"""
# Clerk's timestamps are milliseconds since the epoch.
T0 = 1_750_000_000_000


def clerk_id() -> str:
    return f"user_{uuid.uuid4().hex[:24]}"


def user_event(
    user_id: str,
    *,
    event_type: str = "user.created",
    updated_at: int = T0,
    first_name: str | None = "Ada",
    last_name: str | None = "Lovelace",
    username: str | None = "ada",
    email: str = "ada.lovelace@example.com",
    public_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Clerk user event shaped like the real ones (the fields the server reads and more)."""
    return {
        "object": "event",
        "type": event_type,
        "timestamp": updated_at,
        "instance_id": "ins_test",
        "data": {
            "object": "user",
            "id": user_id,
            "username": username,
            "first_name": first_name,
            "last_name": last_name,
            "image_url": f"https://img.clerk.com/{user_id}.png",
            "primary_email_address_id": "idn_1",
            "email_addresses": [{"id": "idn_1", "object": "email_address", "email_address": email}],
            "public_metadata": public_metadata or {},
            "private_metadata": {},
            "unsafe_metadata": {},
            "created_at": T0,
            "updated_at": updated_at,
        },
    }


def deleted_event(user_id: str) -> dict[str, Any]:
    return {
        "object": "event",
        "type": "user.deleted",
        "data": {"object": "user", "id": user_id, "deleted": True},
    }


def session_event(
    session_id: str, user_id: str, event_type: str = "session.ended"
) -> dict[str, Any]:
    return {
        "object": "event",
        "type": event_type,
        "data": {
            "object": "session",
            "id": session_id,
            "user_id": user_id,
            "status": event_type.split(".")[1],
            "client_id": "client_test",
        },
    }


def secret_of(server: Server) -> str:
    secret = server.runtime.settings.clerk_webhook_secret
    assert secret is not None
    return str(secret.get_secret_value())


def sign(
    server: Server,
    payload: dict[str, Any],
    *,
    msg_id: str | None = None,
    at: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body bytes and the Svix headers, as Svix would send them."""
    body = json.dumps(payload)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret_of(server)).sign(msg_id, at, body),
        "content-type": "application/json",
    }
    return body.encode(), headers


async def post(http: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await http.post(URL, content=body, headers=headers)


async def deliver(
    server: Server, http: httpx.AsyncClient, payload: dict[str, Any], **options: Any
) -> httpx.Response:
    return await post(http, *sign(server, payload, **options))


async def find(viewer: Api, search: str) -> list[dict[str, Any]]:
    data = await viewer.gql(FIND, {"s": search})
    return [edge["node"] for edge in data["users"]["edges"]]


async def found_by_clerk_id(viewer: Api, user_id: str, search: str = "") -> dict[str, Any] | None:
    matches = [u for u in await find(viewer, search) if u["clerkId"] == user_id]
    return matches[0] if matches else None


async def count(server: Server, model: Any) -> int:
    async with server.runtime.db.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def token_with_session(user_id: str, username: str, session_id: str) -> str:
    """A Clerk-like session token (sub, sid) signed with the test's development secret."""
    now = int(time.time())
    claims = {"sub": user_id, "sid": session_id, "username": username, "iat": now, "exp": now + 600}
    return jwt.encode(claims, DEV_SECRET, algorithm="HS256")


def as_user(clients: Clients, token: str, username: str | None = None) -> Api:
    return Api(clients.http, token, username)


# ---------------------------------------------------------------- user.created / user.updated


async def test_a_signed_user_created_event_creates_the_user_named_from_first_and_last_name(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    viewer = await clients.user("viewer")
    user_id = clerk_id()
    response = await deliver(server, http, user_event(user_id))
    assert response.status_code == 200
    found = await found_by_clerk_id(viewer, user_id, "lovelace")
    assert found is not None
    assert found["username"] == "ada"
    assert found["displayName"] == "Ada Lovelace"
    assert found["imageUrl"] == f"https://img.clerk.com/{user_id}.png"
    assert found["role"] == "MEMBER"
    assert found["deletedAt"] is None


async def test_the_email_address_is_never_shown_as_the_display_name(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    viewer = await clients.user("viewer")
    only_username, nothing = clerk_id(), clerk_id()
    email = "secret.person@example.com"
    payloads = [
        user_event(only_username, first_name=None, last_name=None, username="grace", email=email),
        user_event(nothing, first_name=None, last_name=None, username=None, email=email),
    ]
    for payload in payloads:
        assert (await deliver(server, http, payload)).status_code == 200
    named = await found_by_clerk_id(viewer, only_username)
    anonymous = await found_by_clerk_id(viewer, nothing)
    assert named is not None and anonymous is not None
    assert named["displayName"] == "grace"
    assert anonymous["displayName"].strip()
    for user in (named, anonymous):
        assert "example.com" not in json.dumps(user)
    assert await find(viewer, "secret.person") == []


async def test_a_newer_user_updated_event_is_applied(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    viewer = await clients.user("viewer")
    user_id = clerk_id()
    await deliver(server, http, user_event(user_id))
    updated = user_event(
        user_id, event_type="user.updated", updated_at=T0 + 1000, last_name="King", username="ada2"
    )
    assert (await deliver(server, http, updated)).status_code == 200
    found = await found_by_clerk_id(viewer, user_id)
    assert found is not None
    assert (found["displayName"], found["username"]) == ("Ada King", "ada2")


async def test_an_older_user_updated_event_arriving_late_is_ignored(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    viewer = await clients.user("viewer")
    user_id = clerk_id()
    newer = user_event(user_id, event_type="user.updated", updated_at=T0 + 2000, last_name="King")
    older = user_event(user_id, event_type="user.updated", updated_at=T0 + 1000, last_name="Byron")
    created = user_event(user_id, updated_at=T0)
    # Svix does not keep order: the newest arrives first, the creation last.
    answers = [await deliver(server, http, p) for p in (newer, older, created)]
    assert [r.status_code for r in answers] == [200] * 3
    # What changed nothing says so.
    assert [r.json() for r in answers] == [
        {"status": "applied"},
        {"status": "ignored"},
        {"status": "ignored"},
    ]
    found = await found_by_clerk_id(viewer, user_id)
    assert found is not None
    assert found["displayName"] == "Ada King"


async def test_an_admin_role_in_public_metadata_makes_the_user_a_system_admin(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    viewer = await clients.user("viewer")
    user_id = clerk_id()
    payload = user_event(user_id, public_metadata={"role": "admin"})
    assert (await deliver(server, http, payload)).status_code == 200
    found = await found_by_clerk_id(viewer, user_id)
    assert found is not None
    assert found["role"] == "ADMIN"


async def test_an_unknown_role_in_public_metadata_leaves_the_user_a_member(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    viewer = await clients.user("viewer")
    user_id = clerk_id()
    payload = user_event(user_id, public_metadata={"role": "superuser"})
    assert (await deliver(server, http, payload)).status_code == 200
    found = await found_by_clerk_id(viewer, user_id)
    assert found is not None
    assert found["role"] == "MEMBER"


async def test_clerk_cannot_demote_the_last_owner_but_its_profile_still_applies(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    """CONTRACT.md: the last OWNER cannot be demoted. A ``user.updated`` that drops
    the only OWNER's role is answered 200 (Svix would retry a refusal for days): the
    new name applies, the role stays until another OWNER exists, and then applies."""
    viewer = await clients.user("viewer")
    owner, other = clerk_id(), clerk_id()
    t1 = T0 + 1000
    await deliver(server, http, user_event(owner, public_metadata={"role": "owner"}))
    demote = user_event(owner, event_type="user.updated", updated_at=t1, first_name="Ada K")
    demote["data"]["public_metadata"] = {"role": "member"}
    assert (await deliver(server, http, demote)).json() == {"status": "applied"}
    found = await found_by_clerk_id(viewer, owner)
    assert found is not None
    assert (found["role"], found["displayName"]) == ("OWNER", "Ada K Lovelace")

    await deliver(server, http, user_event(other, public_metadata={"role": "owner"}))
    demote["data"]["updated_at"] = t1 + 1000
    assert (await deliver(server, http, demote)).json() == {"status": "applied"}
    found = await found_by_clerk_id(viewer, owner)
    assert found is not None and found["role"] == "MEMBER"
    # The one OWNER left is the last one now.
    async with server.runtime.db.transaction("test_demote") as uow:
        user = await uow.session.scalar(select(User).where(User.clerk_id == other))
        assert user is not None
        with pytest.raises(Conflict, match="last system OWNER"):
            await users.change_role(uow, user, SystemRole.ADMIN)


async def test_a_user_created_by_webhook_signs_in_as_the_same_user(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    user_id = clerk_id()
    await deliver(server, http, user_event(user_id))
    ada = as_user(clients, mint_dev_token(DEV_SECRET, user_id, "ada"))
    me = (await ada.gql(ME))["me"]
    assert (me["clerkId"], me["displayName"]) == (user_id, "Ada Lovelace")


# ---------------------------------------------------------------- signatures


async def test_a_tampered_body_is_refused_with_400_and_changes_nothing(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    viewer = await clients.user("viewer")
    user_id = clerk_id()
    body, headers = sign(server, user_event(user_id))
    tampered = body.replace(b'"Lovelace"', b'"Mallory"')
    assert tampered != body
    response = await post(http, tampered, headers)
    assert response.status_code == 400
    assert await found_by_clerk_id(viewer, user_id) is None
    assert await count(server, WebhookDelivery) == 0
    # The refused delivery did not use up the message id: the genuine one applies.
    assert (await post(http, body, headers)).status_code == 200
    assert await found_by_clerk_id(viewer, user_id) is not None


async def test_a_body_that_is_not_the_signed_bytes_is_refused(
    server: Server, http: httpx.AsyncClient
) -> None:
    payload = user_event(clerk_id())
    body, headers = sign(server, payload)
    # Same JSON value, different bytes: the signature covers the raw body.
    reformatted = json.dumps(payload, indent=2).encode()
    assert json.loads(reformatted) == json.loads(body)
    assert (await post(http, reformatted, headers)).status_code == 400
    assert await count(server, User) == 0


async def test_a_signature_made_with_another_secret_is_refused(
    server: Server, http: httpx.AsyncClient
) -> None:
    body, headers = sign(server, user_event(clerk_id()))
    other = Webhook("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")
    at = datetime.fromtimestamp(int(headers["svix-timestamp"]), UTC)
    headers["svix-signature"] = other.sign(headers["svix-id"], at, body.decode())
    assert (await post(http, body, headers)).status_code == 400
    assert await count(server, User) == 0


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature", "all"])
async def test_a_delivery_without_the_svix_headers_is_refused_with_400(
    server: Server, http: httpx.AsyncClient, missing: str
) -> None:
    body, headers = sign(server, user_event(clerk_id()))
    if missing == "all":
        headers = {"content-type": "application/json"}
    else:
        del headers[missing]
    response = await post(http, body, headers)
    assert response.status_code == 400
    assert await count(server, User) == 0
    assert await count(server, WebhookDelivery) == 0


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
async def test_a_timestamp_more_than_five_minutes_off_is_refused_with_400(
    server: Server, http: httpx.AsyncClient, offset: timedelta
) -> None:
    at = datetime.now(UTC) + offset
    response = await deliver(server, http, user_event(clerk_id()), at=at)
    assert response.status_code == 400
    assert await count(server, User) == 0


async def test_a_timestamp_a_little_old_is_accepted(
    server: Server, http: httpx.AsyncClient
) -> None:
    at = datetime.now(UTC) - timedelta(minutes=4)
    assert (await deliver(server, http, user_event(clerk_id()), at=at)).status_code == 200
    assert await count(server, User) == 1


# ---------------------------------------------------------------- retries


async def test_a_replayed_svix_id_is_answered_200_and_applied_once(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    viewer = await clients.user("viewer")
    user_id = clerk_id()
    first = sign(server, user_event(user_id, updated_at=T0))
    second = sign(
        server, user_event(user_id, event_type="user.updated", updated_at=T0 + 1, last_name="King")
    )
    assert (await post(http, *first)).status_code == 200
    assert (await post(http, *second)).status_code == 200
    # Svix retries the first delivery, byte for byte: it must not bring the old name back.
    for delivery in (first, second, first):
        assert (await post(http, *delivery)).status_code == 200
    found = await found_by_clerk_id(viewer, user_id)
    assert found is not None
    assert found["displayName"] == "Ada King"
    assert await count(server, WebhookDelivery) == 2


async def test_concurrent_retries_of_one_delivery_create_one_user(
    server: Server, http: httpx.AsyncClient
) -> None:
    body, headers = sign(server, user_event(clerk_id()))
    responses = await asyncio.gather(*(post(http, body, headers) for _ in range(5)))
    assert [r.status_code for r in responses] == [200] * 5
    assert await count(server, User) == 1
    assert await count(server, WebhookDelivery) == 1


async def test_an_unknown_event_type_is_answered_200_and_ignored(
    server: Server, http: httpx.AsyncClient
) -> None:
    payload = {
        "object": "event",
        "type": "organization.created",
        "data": {"object": "organization", "id": "org_123", "name": "Acme"},
    }
    response = await deliver(server, http, payload)
    assert response.status_code == 200
    assert await count(server, User) == 0


# ---------------------------------------------------------------- user.deleted


async def test_user_deleted_anonymises_the_user_keeps_their_messages_and_refuses_their_token(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    bob = await clients.user("bob")
    user_id = clerk_id()
    await deliver(server, http, user_event(user_id))
    ada = as_user(clients, mint_dev_token(DEV_SECRET, user_id, "ada"), "ada")
    ada.id = (await ada.gql(ME))["me"]["id"]
    thread_id = await factories.thread(bob, ada)
    message = await factories.send(ada, thread_id, "remember me")
    before = await bob.gql(MESSAGES, {"t": thread_id})
    assert before["messages"]["edges"][0]["node"]["author"] == {"id": ada.id}

    response = await deliver(server, http, deleted_event(user_id))
    assert response.status_code == 200

    seen = (await bob.gql(USER, {"id": ada.id}))["user"]
    assert seen["deletedAt"] is not None
    assert seen["username"] is None and seen["imageUrl"] is None
    assert "Ada" not in seen["displayName"] and "Lovelace" not in seen["displayName"]
    after = await bob.gql(MESSAGES, {"t": thread_id})
    nodes = [edge["node"] for edge in after["messages"]["edges"]]
    assert nodes == [{"id": message["id"], "body": "remember me", "author": None}]
    assert await found_by_clerk_id(bob, user_id) is None
    # Within the viewer cache's lifetime: the webhook must have cleared it.
    assert await ada.error(ME) == "UNAUTHENTICATED"


async def test_deleting_the_last_owner_in_clerk_is_applied_and_says_how_to_make_one(
    server: Server, http: httpx.AsyncClient, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = clerk_id(), clerk_id()
    await deliver(server, http, user_event(first, public_metadata={"role": "owner"}))
    await deliver(server, http, user_event(second, public_metadata={"role": "owner"}))
    with caplog.at_level(logging.WARNING, logger="threadline.services.clerk_sync"):
        assert (await deliver(server, http, deleted_event(first))).status_code == 200
        assert "last system OWNER" not in caplog.text
        assert (await deliver(server, http, deleted_event(second))).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "last system OWNER" in r.getMessage()]
    assert len(warnings) == 1
    assert "threadline users set-role USERNAME owner" in warnings[0]
    viewer = await clients.user("viewer")
    assert await found_by_clerk_id(viewer, second) is None


async def test_owners_deleted_in_clerk_at_once_are_all_applied_and_the_last_one_says_so(
    server: Server, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Each deletion checks for another OWNER: the checks must take their locks in one
    # order, or two of them wait on each other (PostgreSQL then fails one).
    owners = [clerk_id() for _ in range(6)]
    for owner in owners:
        await deliver(server, http, user_event(owner, public_metadata={"role": "owner"}))
    with caplog.at_level(logging.WARNING, logger="threadline.services.clerk_sync"):
        responses = await asyncio.gather(
            *(deliver(server, http, deleted_event(owner)) for owner in owners)
        )
    assert [r.status_code for r in responses] == [200] * len(owners)
    warnings = [r for r in caplog.records if "last system OWNER" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_user_created_event_after_user_deleted_does_not_bring_the_user_back(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    viewer = await clients.user("viewer")
    user_id = clerk_id()
    await deliver(server, http, deleted_event(user_id))
    late = user_event(user_id, event_type="user.updated", updated_at=T0 + 5000)
    assert (await deliver(server, http, late)).status_code == 200
    assert await found_by_clerk_id(viewer, user_id) is None
    ada = as_user(clients, mint_dev_token(DEV_SECRET, user_id, "ada"))
    assert await ada.error(ME) == "UNAUTHENTICATED"


async def test_user_deleted_closes_the_users_live_websocket_with_4401(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    user_id = clerk_id()
    await deliver(server, http, user_event(user_id))
    token = mint_dev_token(DEV_SECRET, user_id, "ada")
    async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack["type"] == "connection_ack"
        assert (await deliver(server, http, deleted_event(user_id))).status_code == 200
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4401


async def test_user_deleted_for_an_unknown_or_already_deleted_user_is_ignored(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    unknown = clerk_id()
    response = await deliver(server, http, deleted_event(unknown))
    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    # The tombstone is still written: a late user.created does not bring them in.
    late = user_event(unknown, updated_at=T0 + 5000)
    assert (await deliver(server, http, late)).json() == {"status": "ignored"}

    known = clerk_id()
    await deliver(server, http, user_event(known))
    first = await deliver(server, http, deleted_event(known))
    assert first.json() == {"status": "applied"}
    again = await deliver(server, http, deleted_event(known))
    assert (again.status_code, again.json()) == (200, {"status": "ignored"})


# ---------------------------------------------------------------- session.ended


async def test_after_session_ended_a_token_of_that_session_is_refused(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    user_id = clerk_id()
    ended = as_user(clients, token_with_session(user_id, "ada", "sess_ended"))
    other = as_user(clients, token_with_session(user_id, "ada", "sess_other"))
    assert (await ended.gql(ME))["me"]["clerkId"] == user_id
    assert (await other.gql(ME))["me"]["clerkId"] == user_id

    response = await deliver(server, http, session_event("sess_ended", user_id))
    assert response.status_code == 200

    # Within the viewer cache's lifetime: the webhook must have cleared it.
    assert await ended.error(ME) == "UNAUTHENTICATED"
    # The same user's other sessions are untouched.
    assert (await other.gql(ME))["me"]["clerkId"] == user_id


@pytest.mark.parametrize("event_type", ["session.removed", "session.revoked"])
async def test_removed_and_revoked_sessions_are_refused_like_ended_ones(
    server: Server, http: httpx.AsyncClient, clients: Clients, event_type: str
) -> None:
    user_id = clerk_id()
    api = as_user(clients, token_with_session(user_id, "ada", "sess_1"))
    await api.gql(ME)
    assert (
        await deliver(server, http, session_event("sess_1", user_id, event_type))
    ).status_code == 200
    assert await api.error(ME) == "UNAUTHENTICATED"


async def test_session_ended_closes_the_sessions_live_websocket_with_4401(
    server: Server, http: httpx.AsyncClient
) -> None:
    user_id = clerk_id()
    token = token_with_session(user_id, "ada", "sess_live")
    async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
        assert (await deliver(server, http, session_event("sess_live", user_id))).status_code == 200
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4401


# ---------------------------------------------------------------- configuration


async def test_without_a_webhook_secret_the_endpoint_answers_503(
    settings: Settings, server: Server
) -> None:
    unconfigured = await start_server(settings.model_copy(update={"clerk_webhook_secret": None}))
    try:
        body, headers = sign(server, user_event(clerk_id()))
        async with httpx.AsyncClient(base_url=unconfigured.base, timeout=30) as client:
            response = await post(client, body, headers)
        assert response.status_code == 503
        assert await count(unconfigured, User) == 0
    finally:
        await stop_server(unconfigured)
