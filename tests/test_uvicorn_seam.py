"""The uvicorn seam: its private names are checked at import, and FAST_PATHS=off skips them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests import factories
from tests.conftest import Clients, Server, start_server, stop_server
from tests.wsclient import GraphQLWS
from threadline import uvicorn_seam
from threadline.config import Settings

EVENTS = "subscription($t: ID!) { threadEvents(threadId: $t) { seq } }"


def test_every_private_name_the_seam_uses_is_in_the_installed_uvicorn() -> None:
    uvicorn_seam.check()  # raises ImportError naming the first missing one


def test_a_name_a_uvicorn_release_dropped_fails_in_one_line_naming_the_version() -> None:
    class Protocol:
        def __init__(self) -> None:
            self.transport = None

    uvicorn_seam.check({Protocol: ("transport",)})  # an attribute a method assigns counts
    with pytest.raises(ImportError) as caught:
        uvicorn_seam.check({Protocol: ("transport", "cycle")})
    message = str(caught.value)
    assert "\n" not in message
    assert "Protocol.cycle" in message
    assert f"uvicorn {uvicorn_seam.uvicorn.__version__}" in message
    assert uvicorn_seam.WRITTEN_FOR in message


def test_fast_paths_settle_from_on_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(fast_paths="off", _env_file=None).fast_paths is False  # type: ignore[arg-type, call-arg]
    assert Settings(fast_paths="on", _env_file=None).fast_paths is True  # type: ignore[arg-type, call-arg]
    # The default, whatever this run's environment says (the suite also runs with it off).
    monkeypatch.delenv("FAST_PATHS", raising=False)
    assert Settings(_env_file=None).fast_paths is True  # type: ignore[call-arg]
    monkeypatch.setenv("FAST_PATHS", "off")
    assert Settings(_env_file=None).fast_paths is False  # type: ignore[call-arg]


@pytest.fixture(params=[True, False], ids=["fast_paths_on", "fast_paths_off"])
async def either(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Server]:
    # Each way explicitly: the suite also runs with FAST_PATHS=off in its environment.
    running = await start_server(settings.model_copy(update={"fast_paths": request.param}))
    yield running
    await stop_server(running)


async def _live_frames(server: Server) -> tuple[list[int], dict[str, int]]:
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        alice, bob = await Clients(http).users("alice", "bob")
        tid = await factories.thread(alice, bob)
        ws = await GraphQLWS.connect(server.ws_url, bob.token)
        await ws.subscribe(EVENTS, {"t": tid})
        await asyncio.sleep(0.3)
        for i in range(3):
            await factories.send(alice, tid, f"m{i}")
        seqs = [(await ws.next())["payload"]["data"]["threadEvents"]["seq"] for _ in range(3)]
        stats = server.runtime.fanout.stats()
        await ws.close()
    return seqs, stats


async def test_live_frames_go_to_the_raw_socket_only_with_fast_paths_on(either: Server) -> None:
    """On: frames are written to the socket directly; off: through ASGI, alike."""
    seqs, stats = await _live_frames(either)
    assert seqs == [1, 2, 3]
    assert stats["members"] == 1
    assert stats["raw"] == (1 if either.runtime.settings.fast_paths else 0)


async def test_clients_closing_as_the_server_stops_leave_its_shutdown_whole(
    settings: Settings,
) -> None:
    """Seen in a full run, at a fixture's teardown: a close frame read in the loop turn
    before uvicorn's shutdown is answered and its transport closed, but the connection
    is lost a turn later; shutdown sent a close frame of its own on it, and websockets'
    InvalidState came out of Server.shutdown (the app's lifespan shutdown not run)."""
    server = await start_server(settings)
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        bob = await Clients(http).user("bob")
    sockets = [await GraphQLWS.connect(server.ws_url, bob.token) for _ in range(8)]
    server.server.should_exit = True
    server.server.exit_requested.set()
    closing = [asyncio.create_task(ws.close()) for ws in sockets]
    await stop_server(server)
    await asyncio.gather(*closing)
