"""The GraphQL multipart request at its edges: an anonymous upload is refused before
its body is read, a `map` that is not the spec's is a 400 that says why, and one file
that fills several variables is stored once per use, with the same bytes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests import factories
from tests.conftest import BACKEND, Api, Clients, Server, start_server, stop_server, token_for
from tests.deployment import closed_port, variant
from tests.uploads import PREFLIGHT, UPLOAD, image, stored_files
from threadline.config import Settings

BODY_BYTES = 20 << 20


def _open_files_under(folder: str) -> int:
    """How many files this process (the server runs in it) has open under ``folder``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(folder)
        except OSError:  # closed meanwhile
            continue
    return count


def _send_upload_until_answered(
    port: int, headers: dict[str, str], spool: str
) -> tuple[int, bytes, int]:
    """Send a 20 MiB multipart upload, stopping at the first byte of an answer.

    Returns the body bytes sent by then, the answer, and the most files the server
    had open in ``spool`` (where the standard library spools large form parts).
    """
    operations = json.dumps({"query": UPLOAD, "variables": {"t": "0", "file": None}})
    head_of_body = (
        b'--XX\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
        + operations.encode()
        + b'\r\n--XX\r\nContent-Disposition: form-data; name="map"\r\n\r\n'
        + b'{"0": ["variables.file"]}'
        + b'\r\n--XX\r\nContent-Disposition: form-data; name="0"; filename="a.bin"\r\n'
        + b"Content-Type: application/octet-stream\r\n\r\n"
    )
    tail = b"\r\n--XX--\r\n"
    total = len(head_of_body) + BODY_BYTES + len(tail)
    lines = [
        "POST /graphql HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: multipart/form-data; boundary=XX",
        f"Content-Length: {total}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    spooled = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + head_of_body)
        sock.setblocking(False)
        sent, chunk, answer = 0, b"\0" * 65536, b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            spooled = max(spooled, _open_files_under(spool))
            try:
                answer = sock.recv(65536)
                break
            except BlockingIOError:
                pass
            if sent < BODY_BYTES:
                try:
                    sent += sock.send(chunk[: BODY_BYTES - sent])
                except BlockingIOError:
                    time.sleep(0.001)
            elif sent == BODY_BYTES:
                sock.sendall(tail)
                sent += 1  # the tail is out: from now on only wait
            else:
                time.sleep(0.01)
        sock.settimeout(10)
        while b"\r\n\r\n" in answer and not answer.rstrip().endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    return min(sent, BODY_BYTES), answer, spooled


@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["no-token", "bad-token"])
async def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(
    server: Server,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    token: str | None,
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    # Form parts over 1 MiB roll over to a temporary file here (the server is in process).
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    headers = dict(PREFLIGHT)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    port = urlsplit(server.base).port
    assert port is not None
    sent, answer, spooled = await asyncio.to_thread(
        _send_upload_until_answered, port, headers, str(spool)
    )
    assert sent < BODY_BYTES, "the server read the whole body before it answered"
    assert spooled == 0, "the server spooled the body of an unauthenticated upload"
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"connection: close" in status.lower()
    error = json.loads(body)["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED", error
    assert stored_files(settings.upload_dir) == []


async def _post_multipart(
    api: Api, fields: dict[str, str], files: dict[str, Any]
) -> tuple[int, str]:
    response = await api.http.post(
        "/graphql",
        data=fields,
        files=files,
        headers={**PREFLIGHT, "authorization": f"Bearer {api.token}"},
    )
    return response.status_code, response.text


OPERATIONS = json.dumps({"query": UPLOAD, "variables": {"t": "0", "file": None}})


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"operations": OPERATIONS, "map": '{"0": ["variables.file.x.y"]}'}, "leads to nothing"),
        ({"operations": OPERATIONS, "map": '{"0": ["variables.nothing.x"]}'}, "leads to nothing"),
        ({"operations": OPERATIONS, "map": '{"0": ["variables.t"]}'}, "null placeholder"),
        ({"operations": OPERATIONS, "map": '{"0": ["query"]}'}, "null placeholder"),
        ({"operations": OPERATIONS, "map": '{"0": ["0.variables.file"]}'}, "leads to nothing"),
        ({"operations": OPERATIONS, "map": "[1, 2]"}, "must be a JSON object"),
        ({"operations": OPERATIONS, "map": '["variables.file"]'}, "must be a JSON object"),
        ({"operations": OPERATIONS, "map": '{"0": "variables.file"}'}, "list of paths"),
        ({"operations": OPERATIONS, "map": '{"0": [1]}'}, "list of paths"),
        ({"operations": OPERATIONS, "map": '{"0": []}'}, "list of paths"),
        ({"operations": OPERATIONS, "map": '{"9": ["variables.file"]}'}, "lacks"),
        ({"operations": "5", "map": '{"0": ["variables.file"]}'}, "`operations`"),
        ({"operations": '"x"', "map": '{"0": ["variables.file"]}'}, "`operations`"),
    ],
)
async def test_a_map_that_is_not_the_specs_is_a_400_that_says_why(
    clients: Clients, settings: Settings, fields: dict[str, str], says: str
) -> None:
    alice = await clients.user("alice")
    status, text = await _post_multipart(alice, fields, {"0": ("a.png", image(), "image/png")})
    assert status == 400, text
    assert says in text, text
    assert stored_files(settings.upload_dir) == []


async def test_an_operations_field_sent_as_a_file_is_a_400(
    clients: Clients, settings: Settings
) -> None:
    alice = await clients.user("alice")
    status, text = await _post_multipart(
        alice,
        {"map": '{"0": ["variables.file"]}'},
        {"operations": ("ops.json", OPERATIONS.encode(), "application/json"), "0": ("a", b"a")},
    )
    assert status == 400, text
    assert "text field" in text


TWICE = """
mutation($t: ID!, $a: Upload!, $b: Upload!) {
  a: uploadAttachment(threadId: $t, file: $a) { id size contentType url }
  b: uploadAttachment(threadId: $t, file: $b) { id size contentType url }
}
"""
SAME_VARIABLE_TWICE = """
mutation($t: ID!, $f: Upload!) {
  a: uploadAttachment(threadId: $t, file: $f) { id size contentType url }
  b: uploadAttachment(threadId: $t, file: $f) { id size contentType url }
}
"""


@pytest.mark.parametrize(
    ("query", "variables", "mapped"),
    [
        (TWICE, {"a": None, "b": None}, ["variables.a", "variables.b"]),
        (SAME_VARIABLE_TWICE, {"f": None}, ["variables.f"]),
    ],
    ids=["one-file-two-variables", "one-variable-used-twice"],
)
async def test_one_file_used_twice_is_stored_twice_with_the_same_bytes(
    clients: Clients,
    settings: Settings,
    query: str,
    variables: dict[str, None],
    mapped: list[str],
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    data = image("PNG", (40, 30))
    status, text = await _post_multipart(
        alice,
        {
            "operations": json.dumps({"query": query, "variables": {"t": tid, **variables}}),
            "map": json.dumps({"0": mapped}),
        },
        {"0": ("pic.png", data, "image/png")},
    )
    assert status == 200, text
    body = json.loads(text)
    assert not body.get("errors"), body
    a, b = body["data"]["a"], body["data"]["b"]
    assert a["id"] != b["id"]
    assert a["size"] == b["size"] == len(data)
    assert a["contentType"] == b["contentType"] == "image/png"
    for attachment in (a, b):
        download = await alice.http.get(attachment["url"])
        assert download.status_code == 200
        assert download.content == data
    assert len(stored_files(settings.upload_dir)) == 2


async def test_an_upload_while_the_database_is_down_is_service_unavailable_not_a_crash(
    settings: Settings, tmp_path: Path
) -> None:
    if BACKEND == "postgres":
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/nowhere"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'missing-folder' / 'threadline.db'}"
    running = await start_server(variant(settings, database_url=url))
    try:
        async with httpx.AsyncClient(base_url=running.base, timeout=30) as http:
            alice = Api(http, token_for("alice"))
            status, text = await _post_multipart(
                alice,
                {"operations": OPERATIONS, "map": '{"0": ["variables.file"]}'},
                {"0": ("a.png", image(), "image/png")},
            )
    finally:
        await stop_server(running)
    assert status == 200, text
    assert json.loads(text)["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE", text
