"""uploadAttachment over the GraphQL multipart request spec: what is accepted, what is
refused, and that a refusal keeps nothing on disk or in the database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from tests import factories
from tests.conftest import Clients, Server, start_server, stop_server
from tests.uploads import (
    docx,
    elf,
    image,
    mp4_header,
    pdf,
    plain_zip,
    post_upload,
    stored_files,
    upload,
    upload_error,
)
from threadline.config import Settings
from threadline.uploads.storage import LocalStorage


async def _count_rows(server: Server) -> int:
    from sqlalchemy import func, select

    from threadline.models import Attachment

    async with server.runtime.db.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(Attachment)) or 0)


@pytest.mark.parametrize(
    ("name", "make", "content_type", "kind"),
    [
        ("photo.png", lambda: image("PNG"), "image/png", "IMAGE"),
        ("photo.jpg", lambda: image("JPEG"), "image/jpeg", "IMAGE"),
        ("report.pdf", pdf, "application/pdf", "DOCUMENT"),
        ("clip.mp4", mp4_header, "video/mp4", "VIDEO"),
        ("notes.txt", lambda: "Grüße, plain text\nline two\n".encode(), "text/plain", "DOCUMENT"),
        (
            "letter.docx",
            docx,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "DOCUMENT",
        ),
    ],
)
async def test_accepted_files_are_stored_with_the_type_their_bytes_show(
    clients: Clients,
    server: Server,
    settings: Settings,
    name: str,
    make: Callable[[], bytes],
    content_type: str,
    kind: str,
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    data = make()
    # The client's content type is ignored: the bytes decide.
    got = await upload(alice, tid, name, data, content_type="application/x-whatever")
    assert got["contentType"] == content_type
    assert got["kind"] == kind
    assert got["size"] == len(data)
    assert got["filename"] == name
    assert got["message"] is None
    assert got["uploadedBy"]["id"] == alice.id
    files = stored_files(settings.upload_dir)
    assert len(files) == 1 and files[0].read_bytes() == data
    assert name not in files[0].name  # stored under a generated name


async def test_an_image_gets_its_width_and_height(clients: Clients) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    got = await upload(alice, tid, "wide.png", image("PNG", (640, 12)))
    assert (got["width"], got["height"]) == (640, 12)
    text = await upload(alice, tid, "a.txt", b"no size")
    assert (text["width"], text["height"]) == (None, None)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("cat.png", elf()),
        ("page.html", b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"),
        ("page.txt", b"  \n<html><body onload='alert(1)'>hi</body></html>"),
        (
            "logo.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>',
        ),
        ("setup.exe", b"MZ\x90\x00\x03" + b"\x00" * 200),
        ("archive.zip", plain_zip()),
        ("run.sh", b"#!/bin/sh\nrm -rf /\n"),
        ("noise.bin", bytes(range(256)) * 8),
        ("empty.txt", b""),
    ],
)
async def test_refused_files_are_bad_user_input_and_leave_nothing(
    clients: Clients, server: Server, settings: Settings, name: str, data: bytes
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    assert await upload_error(alice, tid, name, data, content_type="image/png") == "BAD_USER_INPUT"
    assert stored_files(settings.upload_dir) == []
    assert await _count_rows(server) == 0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A small limit keeps the over-limit test fast; the real default is 25 MiB.
    return settings.model_copy(update={"max_upload_bytes": 256 * 1024})


async def test_a_file_over_the_limit_is_payload_too_large_and_leaves_nothing(
    clients: Clients, server: Server, settings: Settings
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    big = image("PNG") + b"\x00" * (settings.max_upload_bytes + 1)
    response = await post_upload(alice, tid, "big.png", big)
    # Without a body guard the resolver refuses it (200 + error); with one, 413.
    assert response.status_code in (200, 413), response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert stored_files(settings.upload_dir) == []
    assert await _count_rows(server) == 0
    # Exactly at the limit is still fine.
    exact = image("PNG")
    exact += b"\x00" * (settings.max_upload_bytes - len(exact))
    assert (await upload(alice, tid, "exact.png", exact))["size"] == settings.max_upload_bytes


@pytest.mark.parametrize(
    "headers",
    [{}, {"apollo-require-preflight": ""}, {"x-apollo-operation-name": ""}],
)
async def test_a_multipart_request_without_a_preflight_header_is_refused(
    clients: Clients, server: Server, settings: Settings, headers: dict[str, str]
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    response = await post_upload(alice, tid, "a.png", image(), headers=headers)
    assert response.status_code == 400
    assert "Apollo-Require-Preflight" in response.text
    assert stored_files(settings.upload_dir) == []
    assert await _count_rows(server) == 0


async def test_either_preflight_header_lets_an_upload_through(clients: Clients) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    for headers in ({"apollo-require-preflight": "true"}, {"x-apollo-operation-name": "Up"}):
        assert (await upload(alice, tid, "a.png", image(), headers=headers))["kind"] == "IMAGE"


async def test_a_path_in_the_file_name_is_never_used_as_a_path(
    clients: Clients, server: Server, settings: Settings, tmp_path: Path
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    got = await upload(alice, tid, "../../../evil\x1b[31m\u202e.png", image())
    assert got["filename"] == "evil[31m.png"
    got = await upload(alice, tid, "..\\..\\windows\\evil2.png", image())
    assert got["filename"] == "evil2.png"
    got = await upload(alice, tid, "../..", image())
    assert got["filename"] == "file"
    long = await upload(alice, tid, "x" * 600 + ".png", image())
    assert len(long["filename"]) == 200 and long["filename"].endswith(".png")
    # Every file landed inside the upload directory, under a generated name.
    assert [p for p in stored_files(tmp_path) if "evil" in p.name] == []
    assert len(stored_files(settings.upload_dir)) == 4


async def test_only_participants_may_upload(
    clients: Clients, server: Server, settings: Settings
) -> None:
    alice, mallory = await clients.users("alice", "mallory")
    tid = await factories.thread(alice)
    code = await upload_error(mallory, tid, "a.png", image())
    assert code in ("NOT_FOUND", "FORBIDDEN")
    assert await upload_error(clients.anonymous, tid, "a.png", image()) == "UNAUTHENTICATED"
    assert stored_files(settings.upload_dir) == []
    assert await _count_rows(server) == 0


async def test_a_json_string_is_not_a_file(clients: Clients) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    from tests.uploads import UPLOAD

    assert await alice.error(UPLOAD, {"t": tid, "file": "not a file"}) == "BAD_USER_INPUT"


async def test_uploads_are_rate_limited_to_ten_a_minute(settings: Settings) -> None:
    limited = await start_server(settings.model_copy(update={"rate_limits": True}))
    try:
        async with httpx.AsyncClient(base_url=limited.base, timeout=30) as http:
            alice = await Clients(http).user("alice")
            tid = await factories.thread(alice)
            for i in range(10):
                await upload(alice, tid, f"{i}.txt", b"hello")
            response = await post_upload(alice, tid, "11.txt", b"hello")
    finally:
        await stop_server(limited)
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] >= 1
    assert len(stored_files(settings.upload_dir)) == 10


async def test_an_upload_is_sent_in_a_message_once(clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    a = await upload(alice, tid, "a.png", image())
    sent = await alice.gql(
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id body "
        "attachments { id filename kind } } }",
        {"i": {"threadId": tid, "body": "", "attachmentIds": [a["id"]]}},
    )
    message = sent["sendMessage"]
    assert message["attachments"] == [{"id": a["id"], "filename": "a.png", "kind": "IMAGE"}]
    again = await alice.error(
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
        {"i": {"threadId": tid, "body": "again", "attachmentIds": [a["id"]]}},
    )
    assert again == "CONFLICT"
    # Bob cannot send Alice's upload.
    b = await upload(alice, tid, "b.png", image())
    stolen = await bob.error(
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
        {"i": {"threadId": tid, "body": "mine", "attachmentIds": [b["id"]]}},
    )
    assert stolen == "NOT_FOUND"


@pytest.mark.parametrize(
    ("fields", "files"),
    [
        ({"operations": "{not json", "map": '{"0": ["variables.file"]}'}, True),
        ({"operations": '{"query": "{ me { id } }"}', "map": "[1, 2"}, True),
        ({"operations": '{"query": "{ me { id } }"}', "map": '{"0": ["variables.file"]}'}, False),
        ({"map": '{"0": ["variables.file"]}'}, True),
    ],
)
async def test_a_malformed_multipart_request_is_a_client_error(
    clients: Clients, settings: Settings, fields: dict[str, str], files: bool
) -> None:
    alice = await clients.user("alice")
    response = await alice.http.post(
        "/graphql",
        data=fields,
        files={"0": ("a.png", image(), "image/png")} if files else {"x": ("x", b"")},
        headers={"authorization": f"Bearer {alice.token}", "apollo-require-preflight": "1"},
    )
    assert response.status_code == 400, response.text
    assert stored_files(settings.upload_dir) == []


async def test_an_upload_mapped_onto_another_argument_is_refused(clients: Clients) -> None:
    import json

    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    from tests.uploads import UPLOAD

    response = await alice.http.post(
        "/graphql",
        data={
            "operations": json.dumps({"query": UPLOAD, "variables": {"t": None, "file": None}}),
            "map": json.dumps({"0": ["variables.t"], "1": ["variables.file"]}),
        },
        files={"0": ("a.png", image(), "image/png"), "1": ("b.png", image(), "image/png")},
        headers={"authorization": f"Bearer {alice.token}", "apollo-require-preflight": "1"},
    )
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    # The same class of input over JSON: a value the ID scalar cannot take.
    assert await alice.error(UPLOAD, {"t": {"not": "an id"}, "file": None}) == "BAD_USER_INPUT"
    assert tid


async def test_a_cancelled_save_leaves_no_file(tmp_path: Path) -> None:
    # Cancelled while a thread closes or renames it (a request that ends mid-upload): the
    # thread's call runs all the same, and a whole file no row names was never swept.
    storage = LocalStorage(tmp_path)
    for attempt in range(300):
        consumed = asyncio.Event()

        async def chunks() -> AsyncIterator[bytes]:
            yield b"x" * 100
            consumed.set()  # noqa: B023 - this attempt's, awaited before the next

        task = asyncio.create_task(storage.save(chunks(), max_bytes=1000))
        await consumed.wait()
        for _ in range(attempt % 15):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await storage.delete((await task).key)  # done before the cancel: the caller's
    assert stored_files(tmp_path) == []


async def test_only_a_message_with_attachments_may_be_edited_to_an_empty_body(
    clients: Clients,
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    a = await upload(alice, tid, "a.png", image())
    with_file = await factories.send(alice, tid, "look", attachmentIds=[a["id"]])
    plain = await factories.send(alice, tid, "just text")
    edit = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { body } }"
    assert (await alice.gql(edit, {"m": with_file["id"], "b": " \n"}))["editMessage"]["body"] == ""
    assert await alice.error(edit, {"m": plain["id"], "b": " \n"}) == "BAD_USER_INPUT"
