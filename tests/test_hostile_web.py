"""The web page and the attachment downloads against a hostile signed-in user or a
hostile site: what they can make another user's browser do (defects found by an
attack, 2026-12-03).

Each test fails on the code it was written against and states the rule it breaks.
Held in the same attack (no test here): every piece of user text the page renders
(bodies, names, titles, file names, edit history, typing, "seen by", reactions,
pinned messages) stays text; downloads carry nosniff, a sandboxing CSP, no-referrer
and a percent-encoded file name; the development token endpoint is absent in
production.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import update

from tests import factories, test_web_browser
from tests.conftest import Clients, Server, serving
from tests.test_web_browser import expect, open_thread, sign_in
from tests.uploads import upload, upload_error
from threadline.models import Attachment

# As in the browser tests: the module's event loop and one Chromium for its tests.
pytestmark = [pytest.mark.slow, pytest.mark.any_backend, pytest.mark.asyncio(loop_scope="module")]
server, http, clients = serving("module")
module_chromium, browser = test_web_browser.module_chromium, test_web_browser.browser


@asynccontextmanager
async def hostile_site(body: bytes) -> AsyncIterator[str]:
    """Another site than the server's (localhost, not 127.0.0.1) serving one page."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {len(body)}"
        writer.write(f"{head}\r\nconnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    site = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://localhost:{site.sockets[0].getsockname()[1]}/"
    finally:
        site.close()


async def test_another_site_cannot_frame_the_chat_page(server: Server, browser: Any) -> None:
    """The chat page refuses to be framed by another site (CSP frame-ancestors, and
    X-Frame-Options for older browsers): a framed page can be overlaid with the hostile
    site's own decoys, so that the user's clicks land on our buttons (clickjacking).

    Evidence: a page served from http://localhost:<port> (another site than
    127.0.0.1) with <iframe src="http://127.0.0.1:<port>/"> shows our page inside it;
    the page's CSP has no frame-ancestors and there is no X-Frame-Options."""
    framed = f'<h1>Win a prize</h1><iframe src="{server.base}/"></iframe>'.encode()
    async with hostile_site(framed) as url:
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        frame = page.frames[1]
        await frame.wait_for_load_state()
        shown = await frame.evaluate("document.body ? document.body.innerText : ''")
    assert "Skip to the conversation" not in shown, "our page rendered inside another site"
    response = await page.request.get(f"{server.base}/")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers.get("x-frame-options") == "DENY"


async def test_a_site_that_opens_the_chat_page_keeps_no_handle_on_it(
    server: Server, browser: Any
) -> None:
    """The chat page is in a browsing context group of its own (Cross-Origin-Opener-
    Policy): a site that opened it must not be able to navigate it later, say to a
    look-alike sign-in page once the user has looked away (reverse tabnabbing), nor
    probe it (count its frames, see when it closes).

    Evidence: a page on http://localhost:<port> that ran `w = window.open(<our page>)`
    still had a live handle once our page had loaded (`w.closed` false, `w.length`
    readable); it could set `w.location`."""
    async with hostile_site(b"<h1>Read the release notes</h1>") as url:
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        async with page.context.expect_page() as opened:
            await page.evaluate(f"window.chat = window.open({server.base + '/'!r})")
        chat = await opened.value
        await chat.wait_for_load_state()
        await expect(chat.get_by_text("Skip to the conversation")).to_be_attached()
        assert await page.evaluate("window.chat.closed") is True
    response = await page.request.get(f"{server.base}/")
    assert response.headers.get("cross-origin-opener-policy") == "same-origin-allow-popups"


SCRIPT = b"<script>document.title = 'ran in ' + location.href</script>\n"
# Each accepted (plain text whose first byte is no "<", a PDF by its magic bytes), yet a
# page or a program once saved under its name: a browser opens .html/.svg from the disk
# as a page and runs its script, Windows runs .hta (mshta) and .js (Windows Script
# Host) on a double click.
HOSTILE_FILES = [
    ("invite.html", b"Hello\n" + SCRIPT, "text/plain", ".txt"),
    ("logo.svg", b"Hello\n" + SCRIPT, "text/plain", ".txt"),
    ("update.hta", b"Hello\n" + SCRIPT, "text/plain", ".txt"),
    ("setup.js", b"Hello\n" + SCRIPT, "text/plain", ".txt"),
    ("report.html", b"%PDF-1.4\n" + SCRIPT, "application/pdf", ".pdf"),
]


async def test_an_accepted_file_is_never_saved_under_a_name_that_runs_it(
    server: Server, browser: Any, clients: Clients
) -> None:
    """An accepted file reaches the other user's disk under a name that says what its
    bytes are. The contract refuses HTML, SVG with script and executables; a file the
    server took for plain text or a PDF, and that the receiver's machine opens as a
    page or runs as a program (by its name), is one of those all the same.

    Evidence: Eve uploads "Hello\\n<script>...</script>" as invite.html, logo.svg,
    update.hta and setup.js, and "%PDF-1.4\\n<script>...</script>" as report.html:
    each is accepted (text/plain, application/pdf) and keeps its name, and when the
    victim clicks it in the page Chromium saves it under that name (Content-Disposition
    carries the name as given)."""
    victim = await sign_in(browser, server.base, "victim")
    eve, victim_api = await clients.users("eve", "victim")
    tid = await factories.thread(eve, victim_api, title="Files")
    ids = []
    for name, data, content_type, _ in HOSTILE_FILES:
        attachment = await upload(eve, tid, name, data)
        assert attachment["contentType"] == content_type
        ids.append(attachment["id"])
    await factories.send(eve, tid, "the files", attachmentIds=ids)
    await open_thread(victim, "Files")
    saved = []
    for link in await victim.page.locator(".thread-main a.file").all():
        async with victim.page.expect_download() as started:
            await link.click()
        saved.append((await started.value).suggested_filename)
    wanted = [f"{name}{suffix}" for name, _, _, suffix in HOSTILE_FILES]
    assert sorted(saved) == sorted(wanted)


async def test_a_file_stored_before_names_were_checked_is_saved_under_a_safe_name(
    server: Server, clients: Clients
) -> None:
    """The download names the file by what its bytes are also for a row stored under its
    client's name (uploaded before the server checked names): a text file stored as
    invite.html is served as invite.html.txt.

    Evidence: the download's Content-Disposition carries the stored name as it is."""
    eve, victim = await clients.users("eve", "victim")
    tid = await factories.thread(eve, victim)
    attachment = await upload(eve, tid, "notes.txt", b"Hello\n" + SCRIPT)
    async with server.runtime.db.transaction("test_legacy_name") as uow:
        await uow.session.execute(
            update(Attachment)
            .where(Attachment.id == uuid.UUID(attachment["id"]))
            .values(filename="invite.html")
        )
    await factories.send(eve, tid, "notes", attachmentIds=[attachment["id"]])
    query = "query($t: ID!) { thread(threadId: $t) { messages(last: 1) { edges { node {"
    query += " attachments { url } } } } } }"
    data = await victim.gql(query, {"t": tid})
    url = data["thread"]["messages"]["edges"][0]["node"]["attachments"][0]["url"]
    async with httpx.AsyncClient() as browser_like:
        response = await browser_like.get(url)
    assert response.status_code == 200
    assert response.headers["content-disposition"].endswith("''invite.html.txt")


# Pillow warns while it reads the size; the upload is refused all the same.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
async def test_an_image_that_decodes_to_hundreds_of_megabytes_is_refused(clients: Clients) -> None:
    """An accepted image is one the receivers' browsers can show: not one past Pillow's
    own decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89,478,485 pixels, 358 MB
    once decoded), which the server reads the size with and only warns about.

    Evidence: a 12000 x 12000 one-bit PNG of 17.5 KB (144 million pixels) is accepted
    as an IMAGE; opening the thread it was sent in grew headless Chromium's memory by
    520 MB. Ten of them fit in one message (175 KB) and ask each reader's tab for 5 GB."""
    eve = await clients.user("eve")
    tid = await factories.thread(eve)
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, "PNG")
    assert len(bomb.getvalue()) < 20_000
    assert await upload_error(eve, tid, "bomb.png", bomb.getvalue()) == "BAD_USER_INPUT"
