"""With Redis unreachable the server degrades instead of failing (issue 11, item 5).

Sends persist, new WebSockets are accepted and their subscriptions replay from
the event log, presence reads say what this process knows, presence and typing
writes are SERVICE_UNAVAILABLE, and every session row is closed when its socket
goes. The database is the test backend's; Redis is a port nothing listens on, or
a redis-server of the test's own that it kills mid-session.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from tests import factories
from tests.conftest import Api, Server, free_port, start_server, stop_server, token_for
from tests.test_thread_events import EVENTS
from tests.wsclient import GraphQLWS
from threadline.config import Settings
from threadline.models import Session

ME_PRESENCE = "{ me { presence { status lastSeenAt } } }"
USER_PRESENCE = "query($u: ID!) { user(id: $u) { presence { status } } }"
MESSAGES = (
    "query($t: ID!) { thread(threadId: $t) { messages(last: 10) { edges { node { body } } } } }"
)
SESSIONS = "{ mySessions { id disconnectedAt } }"
SET_TYPING = "mutation($t: ID!) { setTyping(threadId: $t, isTyping: true) }"
SET_PRESENCE = "mutation { setPresence(status: AWAY) { status } }"
PRESENCE_SUB = (
    "subscription($u: [ID!]!) { presence(userIds: $u) { user { username } presence { status } } }"
)


async def open_session_rows(database_url: str) -> int:
    """Session rows with no disconnectedAt, read straight from the database."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(Session).where(Session.disconnected_at.is_(None))
            )
    finally:
        await engine.dispose()
    return int(count or 0)


async def until_no_open_sessions(database_url: str) -> int:
    """Waits (a few seconds at most) for the server's side of the closes to run."""
    count = await open_session_rows(database_url)
    for _ in range(50):
        if count == 0:
            break
        await asyncio.sleep(0.1)
        count = await open_session_rows(database_url)
    return count


@pytest.fixture
async def dead_redis(settings: Settings) -> AsyncIterator[Server]:
    """A server whose REDIS_URL is a local port with nothing listening."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    running = await start_server(settings.model_copy(update={"redis_url": dead}))
    yield running
    await stop_server(running)


async def signed_in(http: httpx.AsyncClient, username: str) -> Api:
    api = Api(http, token_for(username), username)
    api.id = (await api.gql("{ me { id } }"))["me"]["id"]
    return api


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("errors"), f"expected an error, got {body}"
    error: dict[str, Any] = body["errors"][0]
    return error


async def test_with_redis_down_sends_persist_sockets_are_accepted_and_sessions_close(
    dead_redis: Server, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with httpx.AsyncClient(base_url=dead_redis.base, timeout=30) as http:
        alice, bob = await signed_in(http, "alice"), await signed_in(http, "bob")
        tid = await factories.thread(alice, bob)
        # Sends persist: each is stored and can be read back.
        for i in range(3):
            await factories.send(alice, tid, f"while redis is down {i}")
        page = await bob.gql(MESSAGES, {"t": tid})
        bodies = [e["node"]["body"] for e in page["thread"]["messages"]["edges"]]
        assert bodies == [f"while redis is down {i}" for i in range(3)]

        # New sockets are accepted, and a subscription replays what the log holds.
        assert bob.token is not None
        ws = await GraphQLWS.connect(dead_redis.ws_url, bob.token)
        await ws.subscribe(EVENTS, {"t": tid, "after": 0})
        replayed = [(await ws.next())["payload"]["data"]["threadEvents"] for _ in range(3)]
        assert [e["seq"] for e in replayed] == [1, 2, 3]

        # Presence reads say what this process knows: bob is connected here.
        me = await bob.gql(ME_PRESENCE)
        assert me["me"]["presence"]["status"] == "ONLINE"
        assert (await alice.gql(USER_PRESENCE, {"u": bob.id}))["user"]["presence"][
            "status"
        ] == "ONLINE"
        # Nobody knows of alice's socket (she has none): OFFLINE, not an error.
        assert (await bob.gql(USER_PRESENCE, {"u": alice.id}))["user"]["presence"][
            "status"
        ] == "OFFLINE"
        # A presence subscription starts with what is known.
        presence_op = await ws.subscribe(PRESENCE_SUB, {"u": [bob.id]})
        first = await ws.next()
        assert first["id"] == presence_op
        assert first["payload"]["data"]["presence"]["presence"]["status"] == "ONLINE"

        # Writes that need Redis fail with a code a client can act on, and retryAfter.
        for mutation, variables in ((SET_TYPING, {"t": tid}), (SET_PRESENCE, None)):
            error = error_of(await bob.raw(mutation, variables))
            assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE", error
            assert error["extensions"]["retryAfter"] >= 1

        assert await open_session_rows(settings.database_url) == 1
        await ws.close()
        # The session row is closed when the socket goes, whatever Redis does.
        assert await until_no_open_sessions(settings.database_url) == 0
        sessions = (await bob.gql(SESSIONS))["mySessions"]
        assert len(sessions) == 1 and sessions[0]["disconnectedAt"] is not None

    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert tracebacks == []
    assert not any("Internal server error" in r.getMessage() for r in caplog.records)


async def test_redis_killed_mid_session_loses_no_send_and_no_socket(settings: Settings) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    redis_proc = await asyncio.create_subprocess_exec(
        binary,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        stdout=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.3)
    server = await start_server(
        # One plain Redis, on the cluster row too (its own test kills a master).
        settings.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{port}/0", "redis_cluster": False}
        )
    )
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            alice, bob = await signed_in(http, "alice"), await signed_in(http, "bob")
            assert alice.token is not None and bob.token is not None
            tid = await factories.thread(alice, bob)
            before = await GraphQLWS.connect(server.ws_url, bob.token)
            # From seq 0: no wait for the server to register it.
            await before.subscribe(EVENTS, {"t": tid, "after": 0})
            await factories.send(alice, tid, "before")
            assert (await before.next())["payload"]["data"]["threadEvents"]["seq"] == 1

            redis_proc.kill()
            await redis_proc.wait()

            await factories.send(alice, tid, "during")
            # A socket opened while Redis is down is accepted and replays from the log.
            during = await GraphQLWS.connect(server.ws_url, alice.token)
            await during.subscribe(EVENTS, {"t": tid, "after": 0})
            seqs = [
                (await during.next())["payload"]["data"]["threadEvents"]["seq"] for _ in range(2)
            ]
            assert seqs == [1, 2]
            assert await open_session_rows(settings.database_url) == 2
            await before.close()
            await during.close()
            assert await until_no_open_sessions(settings.database_url) == 0
    finally:
        await stop_server(server)
        if redis_proc.returncode is None:
            redis_proc.kill()
            await redis_proc.wait()
