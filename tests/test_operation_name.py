"""A document of several operations needs an operationName: without one, every path answers
the GraphQL spec's request error (BAD_USER_INPUT) and runs nothing; with one, it runs that one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from tests.conftest import Clients, Server, token_for
from tests.wsclient import GraphQLWS

TWO_QUERIES = "query First { me { id } } query Second { me { username } }"
CREATE_THEN_READ = (
    'mutation Create { createThread(input: {title: "should not exist"}) { id } } '
    "query Read { me { username } }"
)
TWO_SUBSCRIPTIONS = (
    "subscription Mine { viewerEvents { __typename } } "
    "subscription Also { viewerEvents { __typename } }"
)
MUST_NAME = "Must provide operation name if query contains multiple operations."


def assert_name_required(errors: list[dict[str, Any]]) -> None:
    assert [e["message"] for e in errors] == [MUST_NAME]
    assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


def auth(username: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token_for(username)}"}


async def thread_count(http: httpx.AsyncClient, username: str) -> int:
    response = await http.post(
        "/graphql",
        json={"query": "{ threads(first: 10) { edges { node { id } } } }"},
        headers=auth(username),
    )
    return len(response.json()["data"]["threads"]["edges"])


async def test_json_post_without_an_operation_name_gets_the_spec_error_and_runs_nothing(
    clients: Clients,
) -> None:
    await clients.user("ann")
    http = clients.http
    for document in (TWO_QUERIES, CREATE_THEN_READ):
        response = await http.post("/graphql", json={"query": document}, headers=auth("ann"))
        assert response.status_code == 200
        body = response.json()
        assert body.get("data") is None
        assert_name_required(body["errors"])
    assert await thread_count(http, "ann") == 0
    # Named, each runs: the second operation as readily as the first.
    named = await http.post(
        "/graphql", json={"query": TWO_QUERIES, "operationName": "Second"}, headers=auth("ann")
    )
    assert named.json() == {"data": {"me": {"username": "ann"}}}
    created = await http.post(
        "/graphql",
        json={"query": CREATE_THEN_READ, "operationName": "Create"},
        headers=auth("ann"),
    )
    assert created.json()["data"]["createThread"]["id"]
    assert await thread_count(http, "ann") == 1


async def test_get_without_an_operation_name_gets_the_spec_error(clients: Clients) -> None:
    await clients.user("ann")
    response = await clients.http.get(
        "/graphql", params={"query": TWO_QUERIES}, headers=auth("ann")
    )
    assert response.status_code == 200
    assert_name_required(response.json()["errors"])
    named = await clients.http.get(
        "/graphql", params={"query": TWO_QUERIES, "operationName": "Second"}, headers=auth("ann")
    )
    assert named.json() == {"data": {"me": {"username": "ann"}}}


async def test_websocket_operations_without_an_operation_name_get_the_spec_error(
    server: Server, clients: Clients
) -> None:
    await clients.user("ann")
    ws = await GraphQLWS.connect(server.ws_url, token_for("ann"))
    try:
        await ws.subscribe(CREATE_THEN_READ)
        message = await ws.next()
        assert message["type"] == "error"
        assert_name_required(message["payload"])
        await ws.conn.send(
            json.dumps(
                {
                    "id": "named",
                    "type": "subscribe",
                    "payload": {"query": TWO_QUERIES, "operationName": "Second"},
                }
            )
        )
        message = await ws.next()
        assert message["payload"] == {"data": {"me": {"username": "ann"}}}
    finally:
        await ws.close()
    assert await thread_count(clients.http, "ann") == 0


async def test_the_legacy_websocket_protocol_gets_the_spec_error_too(
    server: Server, clients: Clients
) -> None:
    await clients.user("ann")
    async with websockets.connect(server.ws_url, subprotocols=["graphql-ws"]) as conn:  # type: ignore[list-item]
        init = {
            "type": "connection_init",
            "payload": {"authorization": f"Bearer {token_for('ann')}"},
        }
        await conn.send(json.dumps(init))
        # (that protocol serves subscriptions only)
        start = {"id": "1", "type": "start", "payload": {"query": TWO_SUBSCRIPTIONS}}
        await conn.send(json.dumps(start))
        while True:
            message = json.loads(await asyncio.wait_for(conn.recv(), 10))
            if message["type"] in {"data", "error"}:
                break
        assert message["type"] == "error"  # that protocol's error carries one error
        assert_name_required([message["payload"]])
