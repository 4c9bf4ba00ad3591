"""Live fan-out: subscribers of one operation share one pump, and none holds up another."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from starlette.websockets import WebSocketState
from websockets.frames import Frame, Opcode

from tests import factories
from tests.conftest import Clients, Server, ServerErrors
from tests.live import fanout_members, new_listener, until
from tests.test_receipts import delivered_to, fill_socket, not_reading
from tests.test_role_changes_live import SET_ROLE, make_owner
from tests.wsclient import GraphQLWS, close_draining
from threadline.realtime import fanout
from threadline.realtime.channels import thread_channel
from threadline.realtime.fanout import start
from threadline.realtime.sinks import text_frame

EVENTS = """
subscription($t: ID!, $after: Int) {
  threadEvents(threadId: $t, afterSeq: $after) {
    __typename seq ... on MessageCreated { message { body } }
    ... on ParticipantChanged { role }
  }
}
"""


async def _seqs(ws: GraphQLWS, count: int) -> list[int]:
    return [(await ws.next())["payload"]["data"]["threadEvents"]["seq"] for _ in range(count)]


async def test_subscribers_of_one_operation_share_a_group_and_each_get_every_event(
    server: Server, clients: Clients
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    tid = await factories.thread(alice, bob, carol)
    sockets = [await GraphQLWS.connect(server.ws_url, api.token) for api in (alice, bob, carol)]
    for ws in sockets:
        await ws.subscribe(EVENTS, {"t": tid})
    for ws in sockets:
        await ws.until(fanout_members(server, 3))
    for i in range(5):
        await factories.send(alice, tid, f"m{i}")
    # A late joiner asking for everything replays 1..5 from the log, then goes live.
    late = await GraphQLWS.connect(server.ws_url, bob.token)
    await late.subscribe(EVENTS, {"t": tid, "after": 0})
    assert await _seqs(late, 5) == [1, 2, 3, 4, 5]
    for i in range(5, 10):
        await factories.send(alice, tid, f"m{i}")
    for ws in sockets:
        assert await _seqs(ws, 10) == list(range(1, 11))
    assert await _seqs(late, 5) == [6, 7, 8, 9, 10]
    # afterSeq only says where a stream starts: all four share one rendering and pump,
    # and (fast paths on) uvicorn's sans-I/O sockets take the frame bytes directly.
    raw = 4 if server.runtime.settings.fast_paths else 0
    assert server.runtime.fanout.stats() == {"groups": 1, "members": 4, "raw": raw, "waiting": 0}
    for ws in [*sockets, late]:
        await ws.close()
    for _ in range(50):
        if server.runtime.fanout.stats()["groups"] == 0:
            break
        await asyncio.sleep(0.05)
    assert server.runtime.fanout.stats()["groups"] == 0  # the last one out stops the pump


async def test_removing_one_member_ends_only_that_subscription(
    server: Server, clients: Clients
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    tid = await factories.thread(alice, bob, carol)
    bob_ws = await GraphQLWS.connect(server.ws_url, bob.token)
    carol_ws = await GraphQLWS.connect(server.ws_url, carol.token)
    await bob_ws.subscribe(EVENTS, {"t": tid})
    await carol_ws.subscribe(EVENTS, {"t": tid})
    await carol_ws.until(fanout_members(server, 2))
    await alice.gql(
        "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }",
        {"t": tid, "u": bob.id},
    )
    assert (await bob_ws.next())["payload"]["data"]["threadEvents"]["role"] is None
    assert (await bob_ws.next())["type"] == "complete"
    assert (await carol_ws.next())["payload"]["data"]["threadEvents"]["role"] is None
    await factories.send(alice, tid, "still here")
    event = (await carol_ws.next())["payload"]["data"]["threadEvents"]
    assert event["message"]["body"] == "still here"
    with pytest.raises(TimeoutError):
        await bob_ws.next(timeout=0.3)
    await bob_ws.close()
    await carol_ws.close()


async def test_a_subscriber_that_stops_reading_does_not_hold_up_the_others(
    server: Server, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "SEND_TIMEOUT_SECONDS", 30.0)
    # Twelve copies of the body per frame (~48 KB): bob's socket fills up quickly.
    big = (
        "subscription($t: ID!) { threadEvents(threadId: $t) { seq ... on MessageCreated { "
        + " ".join(f"b{i}: message {{ body }}" for i in range(12))
        + " } } }"
    )
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    tid = await factories.thread(alice, bob, carol)
    # bob's client reads nothing: the server's writes to him soon have to wait.
    stalled = await websockets.connect(
        server.ws_url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        max_queue=1,
        compression=None,
    )
    await stalled.send(json.dumps({"type": "connection_init", "payload": {"token": bob.token}}))
    assert json.loads(await stalled.recv())["type"] == "connection_ack"
    query = {"query": big, "variables": {"t": tid}}
    await stalled.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
    carol_ws = await GraphQLWS.connect(server.ws_url, carol.token)
    await carol_ws.subscribe(big, {"t": tid})
    await carol_ws.until(fanout_members(server, 2))
    body = "y" * 4000
    for _ in range(150):  # about 7 MB for bob, more than the socket buffers take
        await factories.send(alice, tid, body)
    # carol has them all well before bob's 30 s write timeout could free the pump...
    assert await asyncio.wait_for(_seqs(carol_ws, 150), 10) == list(range(1, 151))
    # ...while a write to bob is waiting (so the case above really happened).
    assert server.runtime.fanout.stats()["waiting"] == 1
    await carol_ws.close()
    await close_draining(stalled)


async def test_start_runs_a_coroutine_until_it_waits_and_resume_finishes_it() -> None:
    steps: list[str] = []

    async def quick() -> None:
        steps.append("quick")

    assert start(quick()) is None and steps == ["quick"]

    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def slow() -> None:
        steps.append("waiting")
        await gate
        steps.append("done")

    waiting = start(slow())
    assert waiting is not None and steps[-1] == "waiting"
    task = asyncio.ensure_future(_await(waiting))
    await asyncio.sleep(0)
    assert not task.done()
    gate.set_result(None)
    await task
    assert steps[-1] == "done"

    cancelled: list[bool] = []

    async def cancellable() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    waiting = start(cancellable())
    assert waiting is not None
    task = asyncio.ensure_future(_await(waiting))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True]


async def _await(waiting: fanout.Resume) -> None:
    await waiting


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_a_raw_text_frame_is_what_the_websockets_library_would_send(size: int) -> None:
    payload = ("é" * size).encode()[:size]
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


async def test_a_connection_holds_at_most_100_subscriptions_and_a_slot_frees_when_one_ends(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    for _ in range(100):
        await ws.subscribe(EVENTS, {"t": tid})
    for _ in range(100):  # each one is live, with its frames written by the fan-out
        if server.runtime.fanout.stats()["members"] == 100:
            break
        await asyncio.sleep(0.05)
    assert server.runtime.fanout.stats()["members"] == 100
    over = await ws.subscribe(EVENTS, {"t": tid})
    refused = await ws.next()
    assert refused["id"] == over and refused["type"] in {"error", "next"}
    errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "RATE_LIMITED"
    await ws.conn.send(json.dumps({"id": "1", "type": "complete"}))
    for _ in range(100):
        if server.runtime.fanout.stats()["members"] == 99:
            break
        await asyncio.sleep(0.05)
    again = await ws.subscribe(EVENTS, {"t": tid})
    await ws.until(fanout_members(server, 100))
    await factories.send(alice, tid, "hello")
    while True:  # the refused one's complete, and the others' frames, come first
        message = await ws.next()
        if message["id"] == again:
            break
    assert message["type"] == "next", message
    assert message["payload"]["data"]["threadEvents"]["message"]["body"] == "hello"
    await ws.close()


async def test_a_pump_that_falls_behind_catches_up_from_the_log_without_cutting_anyone_off(
    server: Server, clients: Clients
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    tid = await factories.thread(alice, bob, carol)
    # The pump's broker queue holds one message, and rendering is slow for a while:
    # a burst of sends overflows it.
    server.runtime.broker._queue_limit = 1
    sockets = [await GraphQLWS.connect(server.ws_url, api.token) for api in (bob, carol)]
    pump_listens = new_listener(server, thread_channel(tid))
    for ws in sockets:
        await ws.subscribe(EVENTS, {"t": tid})
    # Both members joined, and the pump hears the thread live (so the burst overflows
    # its broker queue rather than being read from the log at start).
    both_members = fanout_members(server, 2)
    for ws in sockets:
        await ws.until(lambda: both_members() and pump_listens())
    frames = server.app.state.graphql.frames
    render = frames.render

    async def slow_render(*args: object, **kwargs: object) -> str:
        await asyncio.sleep(0.02)
        return await render(*args, **kwargs)  # type: ignore[no-any-return]

    frames.render = slow_render
    await asyncio.gather(*(factories.send(alice, tid, f"burst {i}") for i in range(30)))
    frames.render = render
    for ws in sockets:
        assert await _seqs(ws, 30) == list(range(1, 31))
    assert server.runtime.fanout.stats()["members"] == 2
    for ws in sockets:
        await ws.close()


async def test_a_frame_a_socket_the_server_closed_refuses_ends_the_member_without_a_traceback(
    server: Server, clients: Clients, server_errors: ServerErrors
) -> None:
    """bob's socket is full when his role change closes it: starlette refuses the next
    event's frame. That ends his fan-out member (its slot, its place in the group), the
    event is not marked delivered, and nothing is logged as an error."""
    alice, bob = await clients.users("alice", "bob")
    await make_owner(server, alice)
    tid = await factories.thread(alice, bob)
    conn, uvicorn, context = await not_reading(server, bob)
    try:
        shared = (  # reads nothing of the viewer: the fan-out serves it
            "subscription($t: ID!) { threadEvents(threadId: $t) { seq ... on MessageCreated { "
            + " ".join(f"b{i}: message {{ body }}" for i in range(12))
            + " } } }"
        )
        query = {"query": shared, "variables": {"t": tid}}
        await conn.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
        await until(fanout_members(server, 1))
        fanout = server.runtime.fanout

        def offered(seq: int) -> bool:  # to bob's member, and written whole
            (member,) = [m for g in fanout._groups.values() for m in g.members]
            return member.last >= seq and fanout.stats()["waiting"] == 0

        written = await fill_socket(alice, tid, uvicorn, lambda seq: until(lambda: offered(seq)))
        await alice.gql(SET_ROLE, {"u": bob.id, "r": "ADMIN"})
        websocket = context.connection
        await until(lambda: websocket.application_state is WebSocketState.DISCONNECTED)
        await factories.send(alice, tid, "never sent")
        await until(lambda: context.state.subscriptions == 0)
        assert server.runtime.fanout.stats()["members"] == 0
        assert await delivered_to(server, bob, tid) == written
    finally:
        await close_draining(conn)
    assert not server_errors.records, server_errors.text()
