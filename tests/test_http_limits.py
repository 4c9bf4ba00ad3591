"""Request sizes and paces are enforced where the bytes arrive: 413 before buffering, 408 for
slow bodies and heads, 431 for huge heads, on every route, and a client that sends its
whole body before reading still reads the answer.

The server runs with small limits so that each case takes a moment; the 500 MB case
against a real server process is tests/test_request_size_memory.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import Server, start_server, stop_server, token_for
from tests.wsclient import GraphQLWS
from threadline.config import Settings
from threadline.http_limits import MULTIPART_ALLOWANCE_BYTES, BodyLimits

# Limits of the HTTP layer: the SQLite row of the test command skips it.
pytestmark = pytest.mark.any_backend

MAX_REQUEST = 4096
MAX_UPLOAD = 16384
BODY_TIMEOUT = 0.5
MIN_RATE = 1000
HEAD_TIMEOUT = 0.5
ORIGIN = "https://app.example"


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[Server]:
    running = await start_server(
        settings.model_copy(
            update={
                "max_request_bytes": MAX_REQUEST,
                "max_upload_bytes": MAX_UPLOAD,
                "http_body_timeout_seconds": BODY_TIMEOUT,
                "http_body_min_bytes_per_second": MIN_RATE,
                "http_header_timeout_seconds": HEAD_TIMEOUT,
                "cors_origins": [ORIGIN],
            }
        )
    )
    yield running
    await stop_server(running)


@dataclass
class Answer:
    raw: bytes
    sent: int  # body bytes written before the answer came or the connection closed
    seconds: float

    @property
    def status(self) -> int:
        return int(self.raw.split(b" ", 2)[1])

    @property
    def headers(self) -> dict[str, str]:
        head = self.raw.split(b"\r\n\r\n", 1)[0].decode()
        lines = head.split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}

    @property
    def body(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[1]

    def json(self) -> Any:
        return json.loads(self.body)


async def exchange(
    base: str, head: bytes, pieces: Iterable[bytes] = (), pause: float = 0.0
) -> Answer:
    """Write a request head and body pieces on one connection while reading the answer;
    stop writing once the answer is in. The answer is everything read until the server
    closes the connection."""
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    answer = asyncio.create_task(asyncio.wait_for(reader.read(), 30))
    sent = 0
    try:
        writer.write(head)
        for piece in pieces:
            if answer.done():
                break
            if pause:
                await asyncio.sleep(pause)
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
    except ConnectionError:
        pass  # the server closed: its answer is read below
    raw = await answer
    seconds = time.perf_counter() - started
    writer.close()
    return Answer(raw, sent, seconds)


def post_head(path: str, content_type: str, *extra: str, length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: test", f"content-type: {content_type}", *extra]
    lines.append(
        f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(pieces: Iterable[bytes]) -> Iterable[bytes]:
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def assert_graphql_413(answer: Answer, limit: int) -> None:
    assert answer.status == 413, answer.raw[:300]
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["connection"] == "close"
    (error,) = answer.json()["errors"]
    assert error["extensions"] == {"code": "PAYLOAD_TOO_LARGE", "maxBytes": limit}
    assert str(limit) in error["message"]


async def threads_of(http: httpx.AsyncClient, username: str) -> int:
    response = await http.post(
        "/graphql",
        json={"query": "{ threads(first: 10) { edges { node { id } } } }"},
        headers={"authorization": f"Bearer {token_for(username)}"},
    )
    return len(response.json()["data"]["threads"]["edges"])


async def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read(
    limited: Server,
) -> None:
    # With Expect: 100-continue the client waits: the answer comes with no body sent at all.
    head = post_head("/graphql", "application/json", "expect: 100-continue", length=10**9)
    answer = await exchange(limited.base, head)
    assert_graphql_413(answer, MAX_REQUEST)
    assert b"100 Continue" not in answer.raw


async def test_a_chunked_body_is_cut_off_at_the_limit_and_its_operation_never_runs(
    limited: Server,
) -> None:
    async with httpx.AsyncClient(base_url=limited.base, timeout=30) as http:
        assert await threads_of(http, "ann") == 0
        operation = {
            "query": "mutation($t: String!) { createThread(input: {title: $t}) { id } }",
            "variables": {"t": "x", "padding": "p" * (MAX_REQUEST * 4)},
        }
        body = json.dumps(operation).encode()
        head = post_head(
            "/graphql", "application/json", f"authorization: Bearer {token_for('ann')}"
        )
        answer = await exchange(
            limited.base, head, chunked(body[i : i + 1000] for i in range(0, len(body), 1000))
        )
        assert_graphql_413(answer, MAX_REQUEST)
        assert await threads_of(http, "ann") == 0
        # The same operation without the padding runs: the limit was the only reason.
        operation["variables"] = {"t": "x"}
        small = json.dumps(operation).encode()
        answer = await exchange(limited.base, head, chunked([small]))
        assert answer.status == 200 and answer.json()["data"]["createThread"]["id"]
        assert await threads_of(http, "ann") == 1


async def test_a_body_at_the_limit_is_served(limited: Server) -> None:
    async with httpx.AsyncClient(base_url=limited.base, timeout=30) as http:
        operation: dict[str, Any] = {"query": "{ me { username } }", "variables": {"pad": ""}}
        operation["variables"]["pad"] = "p" * (MAX_REQUEST - len(json.dumps(operation)))
        body = json.dumps(operation).encode()
        assert len(body) == MAX_REQUEST
        response = await http.post(
            "/graphql",
            content=body,
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {token_for('ann')}",
            },
        )
        assert response.status_code == 200
        assert response.json() == {"data": {"me": {"username": "ann"}}}
        response = await http.post(
            "/graphql", content=body + b" ", headers={"content-type": "application/json"}
        )
        assert response.status_code == 413


async def test_every_route_is_bounded_not_only_graphql(limited: Server) -> None:
    async with httpx.AsyncClient(base_url=limited.base, timeout=30) as http:
        big = await http.post("/webhooks/clerk", content=b"{" + b" " * MAX_REQUEST + b"}")
        assert big.status_code == 413
        assert big.headers["content-type"].startswith("text/plain")
        assert str(MAX_REQUEST) in big.text
        # Under the limit the webhook answers as before (no signature: 400).
        small = await http.post("/webhooks/clerk", content=b"{}")
        assert small.status_code == 400
        # GraphQL over GET with a body it does not need: counted like any other.
        got = await http.request(
            "GET", "/graphql?query=%7B__typename%7D", content=b"x" * (MAX_REQUEST + 1)
        )
        assert got.status_code == 413


def multipart_upload(file_bytes: int) -> tuple[bytes, str]:
    boundary = "threadline-test-boundary"
    operations = json.dumps(
        {
            "query": "mutation($f: Upload!) { uploadAttachment(file: $f) { id } }",
            "variables": {"f": None},
        }
    )
    parts = [
        f'--{boundary}\r\ncontent-disposition: form-data; name="operations"\r\n\r\n'
        f"{operations}\r\n",
        f'--{boundary}\r\ncontent-disposition: form-data; name="map"\r\n\r\n'
        '{"0": ["variables.f"]}\r\n',
        f'--{boundary}\r\ncontent-disposition: form-data; name="0"; filename="a.txt"\r\n'
        "content-type: text/plain\r\n\r\n",
    ]
    body = "".join(parts).encode() + b"a" * file_bytes + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def test_multipart_bodies_have_the_upload_limit_and_a_graphql_shaped_413(
    limited: Server,
) -> None:
    # The webhook reads any body it is sent, so the guard's count is what refuses it.
    limit = MAX_UPLOAD + MULTIPART_ALLOWANCE_BYTES
    async with httpx.AsyncClient(base_url=limited.base, timeout=30) as http:
        # Over MAX_REQUEST_BYTES but within the upload limit: read, and answered as before.
        body, content_type = multipart_upload(MAX_UPLOAD)
        response = await http.post(
            "/webhooks/clerk", content=body, headers={"content-type": content_type}
        )
        assert response.status_code == 400  # no Svix signature
    body, content_type = multipart_upload(limit + 1)
    head = post_head("/webhooks/clerk", content_type)
    answer = await exchange(
        limited.base, head, chunked(body[i : i + 8192] for i in range(0, len(body), 8192))
    )
    assert_graphql_413(answer, limit)
    assert "upload" in answer.json()["errors"][0]["message"]
    # Declared up front, refused up front.
    head = post_head("/graphql", content_type, "apollo-require-preflight: true", length=limit + 1)
    assert_graphql_413(await exchange(limited.base, head), limit)


async def test_a_body_that_stalls_gets_408_and_the_connection_closes(limited: Server) -> None:
    head = post_head("/graphql", "application/json", length=100)
    answer = await exchange(limited.base, head, [b'{"query": '])
    assert answer.status == 408
    assert answer.headers["connection"] == "close"
    assert answer.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert BODY_TIMEOUT * 0.8 < answer.seconds < BODY_TIMEOUT + 5


async def test_a_body_trickled_below_the_minimum_rate_gets_408_though_it_never_stalls(
    limited: Server,
) -> None:
    # 50 bytes every 0.1 s (500 B/s, under MIN_RATE): no pause reaches BODY_TIMEOUT, but
    # the body has BODY_TIMEOUT plus a second per MIN_RATE bytes, which it overruns at
    # about 1 s.
    head = post_head("/webhooks/clerk", "application/json", length=MAX_REQUEST)
    answer = await exchange(limited.base, head, (b"x" * 50 for _ in range(80)), pause=0.1)
    assert answer.status == 408
    assert answer.sent < MAX_REQUEST
    assert answer.seconds < 6


async def test_slow_and_oversized_request_heads_are_cut_off(limited: Server) -> None:
    slow = await exchange(limited.base, b"POST /graphql HTTP/1.1\r\nhost: te")
    assert slow.status == 408
    assert HEAD_TIMEOUT * 0.8 < slow.seconds < HEAD_TIMEOUT + 5
    # A connection that never sends a byte is closed without an answer.
    idle = await exchange(limited.base, b"")
    assert idle.raw == b""
    assert idle.seconds < HEAD_TIMEOUT + 5
    huge = await exchange(limited.base, b"GET /healthz HTTP/1.1\r\nx-filler: " + b"f" * 100_000)
    assert huge.status == 431
    # Keep-alive requests that arrive whole are untouched, however long the idle gaps
    # between them stay under uvicorn's keep-alive timeout.
    async with httpx.AsyncClient(base_url=limited.base, timeout=30) as http:
        for _ in range(3):
            assert (await http.get("/healthz")).status_code == 200
            await asyncio.sleep(HEAD_TIMEOUT * 1.5)


async def test_a_client_that_sends_everything_before_reading_still_reads_the_413(
    limited: Server,
) -> None:
    # httpx writes the whole body before it reads: the server drains what keeps coming
    # instead of resetting the connection, which would lose the answer.
    async def twenty_megabytes() -> AsyncIterator[bytes]:
        for _ in range(320):
            yield b"x" * 65536

    async with httpx.AsyncClient(base_url=limited.base, timeout=30) as http:
        response = await http.post(
            "/graphql", content=twenty_megabytes(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        assert (await http.get("/healthz")).status_code == 200


async def test_a_browser_can_read_the_413_of_a_cross_origin_request(limited: Server) -> None:
    head = post_head("/graphql", "application/json", f"origin: {ORIGIN}", length=10**9)
    answer = await exchange(limited.base, head)
    assert_graphql_413(answer, MAX_REQUEST)
    assert answer.headers["access-control-allow-origin"] == ORIGIN


async def test_a_pipelined_request_whose_head_is_late_gets_408_after_the_first_answer(
    limited: Server,
) -> None:
    pipelined = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\nGET /healthz HTTP/1.1\r\nhost:"
    answer = await exchange(limited.base, pipelined)
    first, _, rest = answer.raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 408 " in rest


async def test_a_websocket_message_over_the_limit_closes_the_socket_with_1009(
    limited: Server,
) -> None:
    ws = await GraphQLWS.connect(limited.ws_url, token_for("ann"))
    await ws.conn.send("x" * (MAX_REQUEST + 1))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.conn.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # Within the limit, the next socket works as ever.
    ws = await GraphQLWS.connect(limited.ws_url, token_for("ann"))
    await ws.subscribe("{ me { username } }")
    assert (await ws.next())["payload"] == {"data": {"me": {"username": "ann"}}}
    await ws.close()


async def test_an_http2_body_without_a_length_is_counted_too() -> None:
    # uvicorn speaks HTTP/1, where no length and no chunking means no body; under a server
    # that speaks HTTP/2 such a body streams, and is counted like any other.
    served: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if not message.get("more_body"):
                break
        served.append(1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    pieces = iter([b"x" * 1000] * 10)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": next(pieces), "more_body": True}

    answers: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        answers.append(message)

    guard = BodyLimits(
        app,
        max_request_bytes=MAX_REQUEST,
        max_upload_bytes=MAX_UPLOAD,
        body_timeout_seconds=BODY_TIMEOUT,
        body_min_bytes_per_second=MIN_RATE,
    )
    scope = {"type": "http", "http_version": "2", "path": "/graphql", "headers": []}
    await guard(scope, receive, send)
    assert answers[0]["status"] == 413
    assert not served
