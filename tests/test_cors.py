"""CORS_ORIGINS: which pages may open a WebSocket or send a cross-origin request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from tests.conftest import Server, start_server, stop_server, token_for
from tests.deployment import variant
from tests.wsclient import GraphQLWS
from threadline.config import Settings

# The HTTP and WebSocket layers' origin check: the SQLite row of the test command skips it.
pytestmark = pytest.mark.any_backend


@pytest.fixture
async def cors_server(settings: Settings) -> AsyncIterator[Server]:
    running = await start_server(variant(settings, cors_origins="https://app.example"))
    yield running
    await stop_server(running)


async def ws_origin_answer(server: Server, origin: str | None) -> str:
    """'ack' when the handshake from ``origin`` succeeds and the session starts, else why not."""
    try:
        conn = await websockets.connect(
            server.ws_url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            origin=origin,  # type: ignore[arg-type]
        )
    except websockets.exceptions.InvalidStatus as exc:
        return f"refused {exc.response.status_code}"
    client = GraphQLWS(conn)
    await client.close()
    return "open"


async def test_websockets_from_an_allowed_origin_or_none_open_and_others_are_refused(
    cors_server: Server,
) -> None:
    assert await ws_origin_answer(cors_server, "https://app.example") == "open"
    assert await ws_origin_answer(cors_server, None) == "open"  # native clients send none
    assert await ws_origin_answer(cors_server, "https://evil.example") == "refused 403"
    socket = await GraphQLWS.connect(cors_server.ws_url, token_for("alice"))
    await socket.close()


async def test_http_preflight_allows_the_configured_origin_only(cors_server: Server) -> None:
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    async with httpx.AsyncClient(base_url=cors_server.base) as http:
        allowed = await http.options(
            "/graphql", headers={"origin": "https://app.example", **preflight}
        )
        other = await http.options(
            "/graphql", headers={"origin": "https://evil.example", **preflight}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers
