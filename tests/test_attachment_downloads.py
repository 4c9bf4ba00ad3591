"""Attachment.url: absolute, signed, expiring and stable; the download route checks
it and serves the file safely, with HEAD and byte ranges."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests import factories
from tests.conftest import ON_POSTGRES, Api, Clients, Server, start_server, stop_server
from tests.deployment import closed_port, variant
from tests.uploads import image, upload
from threadline.config import Settings

NODE_URL = "query($id: ID!) { node(id: $id) { ... on Attachment { id url } } }"
MESSAGE_ATTACHMENTS = """
query($id: ID!) { message(messageId: $id) { attachments { id url filename } } }
"""


async def _sent(alice: Api, tid: str, name: str, data: bytes) -> dict[str, str]:
    """Upload a file, send it in a message, and return the attachment as the message shows it."""
    attachment = await upload(alice, tid, name, data)
    message = await factories.send(alice, tid, "see attached", attachmentIds=[attachment["id"]])
    shown = await alice.gql(MESSAGE_ATTACHMENTS, {"id": message["id"]})
    result: dict[str, str] = {**shown["message"]["attachments"][0], "message": message["id"]}
    return result


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    path = changes.pop("path", parts.path)
    query.update(changes)
    return parts._replace(path=path, query=urlencode(query)).geturl()


async def test_a_sent_image_downloads_inline_with_safe_headers(
    clients: Clients, server: Server
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    data = image("PNG", (20, 10))
    got = await _sent(alice, tid, "sunset photo.png", data)
    url = got["url"]
    assert url.startswith(server.base + f"/attachments/{got['id']}/sunset%20photo.png?")
    async with httpx.AsyncClient() as plain:  # no token: the signature is the key
        response = await plain.get(url)
    assert response.status_code == 200
    assert response.content == data
    headers = response.headers
    assert headers["content-type"] == "image/png"
    assert headers["content-disposition"] == "inline; filename*=UTF-8''sunset%20photo.png"
    assert headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "sandbox" in headers["content-security-policy"]
    cache = headers["cache-control"]
    assert cache.startswith("private, max-age=")
    assert 1800 <= int(cache.split("=")[1]) <= 3600
    # Stable within its window (client caches keep working); bob's URL is his own.
    again = await alice.gql(MESSAGE_ATTACHMENTS, {"id": got["message"]})
    assert again["message"]["attachments"][0]["url"] == url
    bobs = await bob.gql(MESSAGE_ATTACHMENTS, {"id": got["message"]})
    assert bobs["message"]["attachments"][0]["url"] != url


async def test_documents_and_text_download_as_attachments(clients: Clients) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    got = await _sent(alice, tid, "notes.txt", b"just text, with <b>tags</b> inside")
    async with httpx.AsyncClient() as plain:
        response = await plain.get(got["url"])
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_tampered_url_is_forbidden(clients: Clients, server: Server) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    first = await _sent(alice, tid, "a.png", image())
    second = await upload(alice, tid, "b.png", image("PNG", (3, 3)))
    url = first["url"]
    exp = int(parse_qs(urlsplit(url).query)["exp"][0])
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    forged = [
        # Its first character changed (it was "A" in 1 run of 64: then nothing changed).
        _with(url, sig=("B" if sig[0] == "A" else "A") + sig[1:]),
        _with(url, exp=str(exp + 3600)),
        _with(url, path=f"/attachments/{second['id']}/a.png"),
        _with(url, path=f"/attachments/{first['id']}/b.png"),
        url.split("?")[0],
        _with(url, exp="soon"),
        _with(url, u=str(uuid.uuid4())),
    ]
    async with httpx.AsyncClient() as plain:
        for bad in forged:
            response = await plain.get(bad)
            assert response.status_code == 403, bad
            assert (await plain.head(bad)).status_code == 403
        assert (await plain.get(url)).status_code == 200


async def test_exp_has_one_spelling_ascii_digits_without_a_leading_zero(
    clients: Clients,
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    url = (await _sent(alice, tid, "a.png", image()))["url"]
    exp = parse_qs(urlsplit(url).query)["exp"][0]
    arabic_indic = exp.translate({ord(d): 0x0660 + int(d) for d in "0123456789"})
    fullwidth = exp.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
    respelled = [arabic_indic, fullwidth, "0" + exp, "00" + exp, "+" + exp, f" {exp}", f"{exp} "]
    async with httpx.AsyncClient() as plain:
        for spelling in respelled:
            response = await plain.get(_with(url, exp=spelling))
            assert response.status_code == 403, spelling
        assert (await plain.get(url)).status_code == 200


async def test_an_expired_url_is_forbidden(clients: Clients, server: Server) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    url = (await _sent(alice, tid, "a.png", image()))["url"]
    signer = server.runtime.url_signer
    later = time.time() + server.runtime.settings.attachment_url_seconds + 1
    signer.clock = lambda: later
    try:
        async with httpx.AsyncClient() as plain:
            assert (await plain.get(url)).status_code == 403
        # A URL minted now is a new one, valid again.
        fresh = (await alice.gql(NODE_URL, {"id": parse_id(url)}))["node"]["url"]
        assert fresh != url
        async with httpx.AsyncClient() as plain:
            assert (await plain.get(fresh)).status_code == 200
    finally:
        signer.clock = time.time


def parse_id(url: str) -> str:
    return urlsplit(url).path.split("/")[2]


async def test_head_and_byte_ranges(clients: Clients) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    text = b"0123456789" * 100
    url = (await _sent(alice, tid, "digits.txt", text))["url"]
    async with httpx.AsyncClient() as plain:
        head = await plain.head(url)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(text))
        assert head.headers["accept-ranges"] == "bytes"
        part = await plain.get(url, headers={"range": "bytes=10-19"})
        assert part.status_code == 206
        assert part.content == text[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(text)}"
        suffix = await plain.get(url, headers={"range": "bytes=-5"})
        assert (suffix.status_code, suffix.content) == (206, text[-5:])
        rest = await plain.get(url, headers={"range": "bytes=995-"})
        assert (rest.status_code, rest.content) == (206, text[995:])
        beyond = await plain.get(url, headers={"range": "bytes=5000-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{len(text)}"
        ranged_head = await plain.head(url, headers={"range": "bytes=0-99"})
        assert ranged_head.status_code == 206
        assert ranged_head.headers["content-length"] == "100"
        several = await plain.get(url, headers={"range": "bytes=0-1,5-6"})
        assert (several.status_code, several.content) == (200, text)


async def test_an_overlong_range_is_ignored_and_the_whole_file_served(clients: Clients) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    text = b"0123456789" * 100
    url = (await _sent(alice, tid, "digits.txt", text))["url"]
    huge = "9" * 5000  # past Python's int-from-string limit (4300 digits)
    async with httpx.AsyncClient() as plain:
        for value in (f"bytes={huge}-", f"bytes=0-{huge}", f"bytes=-{huge}", "bytes=0-" + "0" * 19):
            response = await plain.get(url, headers={"range": value})
            assert (response.status_code, response.content) == (200, text), value[:40]
            assert "content-range" not in response.headers
        # Just under the bound still parses: a start past the end is unsatisfiable.
        beyond = await plain.get(url, headers={"range": "bytes=" + "9" * 18 + "-"})
        assert beyond.status_code == 416


async def test_a_removed_participant_gets_no_new_urls(clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    got = await _sent(alice, tid, "a.png", image())
    assert (await bob.gql(NODE_URL, {"id": got["id"]}))["node"]["url"]
    await alice.gql(
        "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }",
        {"t": tid, "u": bob.id},
    )
    assert (await bob.gql(NODE_URL, {"id": got["id"]}))["node"] is None
    assert await bob.error(MESSAGE_ATTACHMENTS, {"id": got["message"]}) == "NOT_FOUND"


async def test_a_url_minted_before_its_viewer_was_removed_stops_working(
    clients: Clients,
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    got = await _sent(alice, tid, "a.png", image())
    bobs = (await bob.gql(NODE_URL, {"id": got["id"]}))["node"]["url"]
    assert bobs != got["url"]  # each viewer gets a URL of their own
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(bobs)).status_code == 200
        await alice.gql(
            "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }",
            {"t": tid, "u": bob.id},
        )
        # Checked when the file is read, not when the URL was minted: gone at once,
        # long before the URL's expiry; alice's own URL still works.
        assert (await plain.get(bobs)).status_code == 404
        assert (await plain.head(bobs)).status_code == 404
        assert (await plain.get(got["url"])).status_code == 200


async def test_a_deleted_messages_attachment_is_no_longer_served(clients: Clients) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    got = await _sent(alice, tid, "a.png", image())
    await alice.gql(
        "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }", {"m": got["message"]}
    )
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(got["url"])).status_code == 404
    assert (await alice.gql(NODE_URL, {"id": got["id"]}))["node"] is None


@pytest.fixture
async def public(settings: Settings) -> AsyncIterator[Server]:
    running = await start_server(
        settings.model_copy(update={"public_url": "https://chat.example.com/"})
    )
    yield running
    await stop_server(running)


async def test_urls_are_built_on_public_url_when_it_is_set(public: Server) -> None:
    async with httpx.AsyncClient(base_url=public.base, timeout=30) as http:
        alice = await Clients(http).user("alice")
        tid = await factories.thread(alice)
        got = await upload(alice, tid, "a.png", image())
    assert got["url"].startswith(f"https://chat.example.com/attachments/{got['id']}/a.png?exp=")


@pytest.mark.skipif(not ON_POSTGRES, reason="a database server that is down: PostgreSQL's case")
async def test_a_download_while_the_database_is_down_is_503_with_retry_after(
    settings: Settings,
) -> None:
    """Rule: a dependency that is down is SERVICE_UNAVAILABLE, not a crash (uploads
    already are). Evidence: a signed download or preview URL, asked while the database
    was unreachable, answered 500 and the server logged a ServiceUnavailable traceback."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/nowhere"
    running = await start_server(variant(settings, database_url=url))
    try:
        signer = running.app.state.runtime.url_signer
        links = [
            signer.url(uuid.uuid4(), "a.pdf", running.base, uuid.uuid4(), preview=preview)
            for preview in (False, True)
        ]
        async with httpx.AsyncClient(timeout=30) as http:
            answers = [await http.get(link) for link in links]
    finally:
        await stop_server(running)
    assert [(a.status_code, a.headers.get("retry-after")) for a in answers] == [(503, "1")] * 2
