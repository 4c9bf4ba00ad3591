"""Previews of large images: made at upload, served like the file (signed, for one
viewer, whose access is checked at each read), backed up, restored and swept with it."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from PIL import Image, ImageCms, ImageStat
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url

from tests import factories, test_backups
from tests.conftest import ON_POSTGRES, Api, Clients, Server, start_server, stop_server, token_for
from tests.deployment import Outage, variant
from tests.live import until
from tests.uploads import image, many_scans_jpeg, oriented, stored_files, upload, upload_error
from threadline.backups import create_backup, restore_backup
from threadline.config import Settings
from threadline.models import Attachment, utcnow
from threadline.services import previews, retention
from threadline.services.previews import PREVIEW_SIDE

EXIF_ORIENTATION = 0x0112

empty_target = test_backups.empty_target  # a never-migrated database, no upload folder


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def decoded(body: bytes) -> tuple[str | None, tuple[int, int]]:
    with Image.open(io.BytesIO(body)) as shown:
        return shown.format, shown.size


async def test_a_large_image_gets_a_webp_preview_and_keeps_its_file(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    original = image(size=(3000, 1500))
    large = await upload(alice, tid, "wide.png", original)
    small = await upload(alice, tid, "small.png", image(size=(640, 480)))
    assert small["previewUrl"] is None
    assert (large["width"], large["height"]) == (3000, 1500)

    await factories.send(alice, tid, "look", attachmentIds=[large["id"]])
    page = await bob.gql(
        "query($t: ID!) { thread(threadId: $t) { messages(last: 1) { edges { node {"
        " attachments { url previewUrl } } } } } }",
        {"t": tid},
    )
    seen = page["thread"]["messages"]["edges"][0]["node"]["attachments"][0]
    shown = await http.get(local(seen["previewUrl"]))
    assert shown.status_code == 200, shown.text
    assert shown.headers["content-type"] == "image/webp"
    assert shown.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in shown.headers["content-security-policy"]
    assert shown.headers["content-disposition"] == "inline; filename*=UTF-8''wide.webp"
    assert decoded(shown.content) == ("WEBP", (PREVIEW_SIDE, PREVIEW_SIDE // 2))
    head = await http.head(local(seen["previewUrl"]))
    assert head.headers["content-length"] == str(len(shown.content))
    whole = await http.get(local(seen["url"]))
    assert (whole.headers["content-type"], whole.content) == ("image/png", original)


async def test_a_preview_turns_a_photo_as_its_exif_orientation_says(
    http: httpx.AsyncClient, clients: Clients
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    out = io.BytesIO()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # shown turned 90° clockwise
    Image.new("RGB", (2000, 1000), (10, 120, 200)).save(out, "JPEG", exif=exif)
    photo = await upload(alice, tid, "photo.jpg", out.getvalue())
    shown = await http.get(local(photo["previewUrl"]))
    assert decoded(shown.content) == ("WEBP", (PREVIEW_SIDE // 2, PREVIEW_SIDE))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
async def test_a_small_image_with_an_exif_orientation_gets_a_turned_preview(
    http: httpx.AsyncClient, clients: Clients, fmt: str
) -> None:
    # Chromium 156 shows a WebP (and a PNG whose eXIf chunk follows its pixels) as
    # stored, on its side; a small image had no preview, so clients showed the file.
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    photo = await upload(alice, tid, f"photo.{fmt.lower()}", oriented(fmt, (600, 300), 6))
    # The size as shown, so a client's placeholder has the shape of what replaces it.
    assert (photo["width"], photo["height"]) == (300, 600)
    assert photo["previewUrl"] is not None
    shown = await http.get(local(photo["previewUrl"]))
    assert decoded(shown.content) == ("WEBP", (300, 600))  # turned, never enlarged
    with Image.open(io.BytesIO(shown.content)) as preview:
        assert preview.getexif().get(EXIF_ORIENTATION, 1) == 1  # never turned twice
    # Shown as stored: its own preview.
    upright = await upload(alice, tid, f"upright.{fmt.lower()}", oriented(fmt, (600, 300), 1))
    assert upright["previewUrl"] is None
    # Upside down: turned, the same shape.
    flipped = await upload(alice, tid, f"flipped.{fmt.lower()}", oriented(fmt, (600, 300), 3))
    assert (flipped["width"], flipped["height"]) == (600, 300)


async def sent_large_image(clients: Clients) -> tuple[Api, Api, str, dict[str, Any]]:
    """Alice, Bob, their thread and the 2,600-pixel image Alice sent there."""
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    large = await upload(alice, tid, "wide.png", image(size=(2600, 1300)))
    await factories.send(alice, tid, "look", attachmentIds=[large["id"]])
    return alice, bob, tid, large


async def test_a_preview_url_is_for_its_viewer_and_its_thread_only(
    server: Server, http: httpx.AsyncClient, clients: Clients
) -> None:
    alice, bob, tid, large = await sent_large_image(clients)
    url = local(large["previewUrl"])
    assert (await http.get(url)).status_code == 200

    # Its signature covers the preview alone, and the file's the file alone.
    file_path = urlsplit(large["url"]).path
    assert (await http.get(f"{file_path}?{urlsplit(url).query}")).status_code == 403
    preview_path = urlsplit(url).path
    assert (await http.get(f"{preview_path}?{urlsplit(large['url']).query}")).status_code == 403
    assert (await http.get(url.replace("sig=", "sig=x"))).status_code == 403
    assert (await http.get(url.replace(f"u={alice.id}", f"u={bob.id}"))).status_code == 403

    # Checked at read time: a URL minted before Alice left no longer serves her.
    await alice.gql(
        "mutation($t: ID!, $u: ID!) { setParticipantRole(threadId: $t, userId: $u, role: OWNER)"
        " { role } }",
        {"t": tid, "u": bob.id},
    )
    await alice.gql("mutation($t: ID!) { leaveThread(threadId: $t) }", {"t": tid})
    assert (await http.get(url)).status_code == 404


async def test_a_preview_goes_with_its_file_when_swept(
    server: Server, clients: Clients, settings: Settings
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    await upload(alice, tid, "wide.png", image(size=(2600, 1300)))
    assert len(stored_files(settings.upload_dir)) == 2  # the file and its preview
    runtime = server.runtime
    report = await retention.sweep(runtime.db, runtime.storage, now=utcnow() + timedelta(hours=25))
    assert report.attachments == 1
    assert stored_files(settings.upload_dir) == []


async def test_a_restored_backup_serves_the_preview(
    server: Server,
    http: httpx.AsyncClient,
    clients: Clients,
    settings: Settings,
    empty_target: Settings,
    tmp_path: Path,
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    large = await upload(alice, tid, "wide.png", image(size=(2600, 1300)))
    await factories.send(alice, tid, "look", attachmentIds=[large["id"]])
    before = (await http.get(local(large["previewUrl"]))).content
    folder, manifest = await create_backup(settings, tmp_path / "backups")
    assert len(manifest.files) == 2
    await restore_backup(empty_target, folder)
    restored = sorted(path.read_bytes() for path in stored_files(empty_target.upload_dir))
    assert restored == sorted(path.read_bytes() for path in stored_files(settings.upload_dir))
    assert before in restored


async def test_a_preview_url_opens_no_file_under_the_download_route(
    http: httpx.AsyncClient, clients: Clients
) -> None:
    # A preview's signature covers the name "\npreview": the download route, whose name
    # comes from the path, must not take it as the file's (the original, EXIF and all).
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    large = await upload(alice, tid, "wide.png", image(size=(2600, 1300)))
    parts = urlsplit(large["previewUrl"])
    attachment_id = parts.path.rsplit("/", 1)[-1]
    confused = await http.get(f"/attachments/{attachment_id}/%0Apreview?{parts.query}")
    assert confused.status_code == 403, confused.headers


def png(picture: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    picture.save(out, "PNG", **params)
    return out.getvalue()


async def preview_of(api: Api, http: httpx.AsyncClient, name: str, data: bytes) -> Image.Image:
    tid = await factories.thread(api)
    uploaded = await upload(api, tid, name, data)
    assert uploaded["previewUrl"] is not None
    shown = await http.get(local(uploaded["previewUrl"]))
    assert shown.status_code == 200, shown.text
    picture = Image.open(io.BytesIO(shown.content))
    picture.load()
    return picture


async def test_a_preview_keeps_the_look_of_grey_palette_and_transparent_images(
    http: httpx.AsyncClient, clients: Clients
) -> None:
    alice = await clients.user("alice")
    size = (2600, 1300)
    # 16-bit grey, black to white: converting it clipped every value past 255 (near white).
    ramp = Image.linear_gradient("L").rotate(90).resize(size).convert("I")
    grey = await preview_of(
        alice, http, "scan.png", png(ramp.point(lambda v: v * 257).convert("I;16"))
    )
    assert 117 < ImageStat.Stat(grey.convert("L")).mean[0] < 137

    # Black and white one-pixel stripes in a palette: resized by nearest pixel, the
    # preview was stripes again; averaged, it is grey.
    stripes = Image.frombytes("P", size, bytes([0, 1]) * (size[0] * size[1] // 2))
    stripes.putpalette([0, 0, 0, 255, 255, 255])
    flat = await preview_of(alice, http, "stripes.png", png(stripes))
    assert ImageStat.Stat(flat.convert("L")).stddev[0] < 30

    # An RGB image whose one colour is declared transparent (tRNS): still see-through.
    clear = await preview_of(
        alice, http, "clear.png", png(Image.new("RGB", size, (255, 0, 0)), transparency=(255, 0, 0))
    )
    assert clear.mode == "RGBA"
    assert clear.getchannel("A").getextrema() == (0, 0)


async def test_a_preview_keeps_the_colour_profile(
    http: httpx.AsyncClient, clients: Clients
) -> None:
    alice = await clients.user("alice")
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = Image.new("RGB", (2600, 1300), (0, 200, 0))
    out = io.BytesIO()
    photo.save(out, "JPEG", icc_profile=profile)
    shown = await preview_of(alice, http, "p3.jpg", out.getvalue())
    assert shown.info.get("icc_profile") == profile


async def test_an_animated_image_gets_no_still_preview(
    http: httpx.AsyncClient, clients: Clients
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    frames = [Image.new("RGB", (1400, 700), (shade * 60, 0, 0)) for shade in range(4)]
    for fmt, name in (("GIF", "anim.gif"), ("PNG", "anim.png"), ("WEBP", "anim.webp")):
        out = io.BytesIO()
        frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=50)
        uploaded = await upload(alice, tid, name, out.getvalue())
        # Clients show the file itself, which moves.
        assert uploaded["previewUrl"] is None, name


async def test_a_jpeg_of_hundreds_of_empty_scans_is_refused_before_any_decoder_sees_it(
    http: httpx.AsyncClient, clients: Clients, settings: Settings
) -> None:
    # 400 scans in 107 KB, each a pass over 16 megapixels: the upload held the one
    # render thread 7 s (10 s alone; Chromium took 13 s to show the file), and at the
    # pixel limit 1,000 of them in 656 KB held it for minutes.
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    slow = many_scans_jpeg((4000, 4000), 400)
    assert await upload_error(alice, tid, "slow.jpg", slow) == "BAD_USER_INPUT"
    assert stored_files(settings.upload_dir) == []
    # An ordinary progressive photo (Pillow's 10 scans) still gets its preview.
    out = io.BytesIO()
    Image.new("RGB", (2600, 1300), (0, 120, 60)).save(out, "JPEG", progressive=True)
    photo = await upload(alice, tid, "photo.jpg", out.getvalue())
    assert photo["previewUrl"] is not None


# Address space allowed past what the interpreter holds, for a 6000x6000 RGB PNG (144 MB
# decoded): a render holding it once takes about 200 MB, twice (as it did, turning the
# whole image before shrinking it) more than 320 MB.
HELD_ONCE = f"""
import io, resource
from PIL import Image
from threadline.services.previews import _render
out = io.BytesIO()
Image.new("RGB", (6000, 6000), (10, 20, 30)).save(out, "PNG")
status = open("/proc/self/status").read()
used = int(status.split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + {256 * 2**20},) * 2)
print(_render(out) is not None)
"""


def test_a_render_holds_the_decoded_image_once() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ran = subprocess.run(
        [sys.executable, "-c", HELD_ONCE], env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.stdout.strip() == "True", ran.stderr


async def test_an_upload_waits_for_a_busy_renderer_a_bounded_time(
    http: httpx.AsyncClient, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The one render thread is busy (other uploads' renders queue there, seconds each).
    monkeypatch.setattr(previews, "RENDER_WAIT_SECONDS", 1.0)
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    release = threading.Event()
    previews._RENDERER.submit(release.wait, 60)
    try:
        # An image too small for a preview never queues for one.
        small = await asyncio.wait_for(upload(alice, tid, "small.png", image(size=(640, 480))), 5)
        assert small["previewUrl"] is None
        # A large one waits a bounded time, then stands without a preview.
        large = await asyncio.wait_for(upload(alice, tid, "wide.png", image(size=(2600, 1300))), 5)
        assert large["previewUrl"] is None
    finally:
        release.set()
    # The queue is free again: the next one gets its preview.
    again = await upload(alice, tid, "wide.png", image(size=(2600, 1300)))
    assert again["previewUrl"] is not None


async def test_with_previews_off_a_large_image_gets_none(settings: Settings) -> None:
    """IMAGE_PREVIEWS=off, for a deployment without the memory a render may take."""
    running = await start_server(settings.model_copy(update={"image_previews": False}))
    try:
        async with httpx.AsyncClient(base_url=running.base, timeout=30) as http:
            alice = Api(http, token_for("alice"))
            alice.id = (await alice.gql("{ me { id } }"))["me"]["id"]
            tid = await factories.thread(alice)
            large = await upload(alice, tid, "wide.png", image(size=(2600, 1300)))
        assert large["previewUrl"] is None
        assert len(stored_files(settings.upload_dir)) == 1
    finally:
        await stop_server(running)


async def preview_key(server: Server, attachment_id: str) -> str | None:
    async with server.runtime.db.reading() as session:
        row = await session.get(Attachment, uuid.UUID(attachment_id))
    assert row is not None
    return row.preview_key


async def lose_preview(server: Server, settings: Settings, uploaded: dict[str, Any]) -> str:
    """Delete the preview's file, as a restored old backup or a lost disk would."""
    key = await preview_key(server, uploaded["id"])
    assert key is not None
    (settings.upload_dir / key).unlink()
    return key


async def preview_urls(api: Api, thread_id: str) -> list[str | None]:
    page = await api.gql(
        "query($t: ID!) { thread(threadId: $t) { messages(last: 5) { edges { node {"
        " attachments { previewUrl } } } } } }",
        {"t": thread_id},
    )
    edges = page["thread"]["messages"]["edges"]
    return [a["previewUrl"] for edge in edges for a in edge["node"]["attachments"]]


# What the preview route answers with; cache-control counts down to the URL's expiry.
SAME_HEADERS = (
    "content-type",
    "content-disposition",
    "x-content-type-options",
    "content-security-policy",
    "referrer-policy",
    "accept-ranges",
    "content-length",
)


def renders_made() -> float:
    return REGISTRY.get_sample_value("threadline_preview_renders_total", {"outcome": "made"}) or 0.0


async def test_a_lost_preview_is_made_again_once_for_its_concurrent_readers_when_it_can_be(
    server: Server,
    http: httpx.AsyncClient,
    clients: Clients,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, bob, tid, large = await sent_large_image(clients)
    url = local(large["previewUrl"])
    before = await http.get(url)
    lost = await lose_preview(server, settings, large)
    # Concurrent readers must not render it twice: the server's own count says.
    start = renders_made()
    # Checked first, as ever: a forged URL makes nothing.
    assert (await http.get(url.replace("sig=", "sig=x"))).status_code == 403
    assert renders_made() == start

    # The one render thread is busy: a bounded wait, then "later", nothing forgotten.
    monkeypatch.setattr(previews, "RENDER_WAIT_SECONDS", 1.0)
    release = threading.Event()
    previews._RENDERER.submit(release.wait, 60)
    try:
        busy = await asyncio.wait_for(http.get(url), 5)
    finally:
        release.set()
    assert (busy.status_code, busy.headers["retry-after"]) == (503, "5")
    assert await preview_key(server, large["id"]) == lost
    assert renders_made() == start

    [bob_url] = await preview_urls(bob, tid)
    assert bob_url is not None
    answers = await asyncio.gather(
        *(http.get(url) for _ in range(4)), http.head(url), http.get(local(bob_url))
    )
    assert [answer.status_code for answer in answers] == [200] * 6, answers[0].text
    assert renders_made() == start + 1
    for answer in answers:
        assert [answer.headers[name] for name in SAME_HEADERS] == [
            before.headers[name] for name in SAME_HEADERS
        ]
        assert answer.headers["cache-control"].startswith("private, max-age=")
    assert all(answer.content == before.content for answer in answers if answer.content)

    # Stored under a new key, nothing else left behind, and served from there on.
    remade = await preview_key(server, large["id"])
    assert remade not in (None, lost)
    assert len(stored_files(settings.upload_dir)) == 2
    assert (await http.get(url)).status_code == 200
    assert renders_made() == start + 1


async def test_a_lost_preview_that_cannot_be_made_again_is_forgotten(
    server: Server, http: httpx.AsyncClient, clients: Clients, settings: Settings
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    gone = await upload(alice, tid, "gone.png", image(size=(2600, 1300)))
    damaged = await upload(alice, tid, "damaged.png", image(size=(2600, 1300)))
    await factories.send(alice, tid, "look", attachmentIds=[gone["id"], damaged["id"]])
    async with server.runtime.db.reading() as session:
        rows = [await session.get(Attachment, uuid.UUID(a["id"])) for a in (gone, damaged)]
    for row in rows:
        assert row is not None and row.preview_key is not None
        (settings.upload_dir / row.preview_key).unlink()
    (settings.upload_dir / rows[0].storage_key).unlink()  # its file is gone too
    # Still a PNG by its first bytes, no longer decodable.
    file = settings.upload_dir / rows[1].storage_key
    file.write_bytes(file.read_bytes()[:100])

    for attachment in (gone, damaged):
        answer = await http.get(local(attachment["previewUrl"]))
        assert answer.status_code == 404, answer.text
        assert await preview_key(server, attachment["id"]) is None
        assert (await http.get(local(attachment["previewUrl"]))).status_code == 404
    # Clients are told so: they show the file (or its own error) instead.
    assert await preview_urls(alice, tid) == [None, None]


@pytest.mark.skipif(not ON_POSTGRES, reason="a database server that goes down: PostgreSQL's case")
async def test_a_lost_preview_whose_database_goes_down_mid_repair_is_503_and_leaves_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evidence: a read was answered 503 while the database was down, but a repair
    whose write then met a down database answered 500 with a traceback."""
    url = make_url(settings.database_url)
    outage = Outage(url.port or 5432)
    through = url.set(port=await outage.start()).render_as_string(hide_password=False)
    running = await start_server(variant(settings, database_url=through))
    try:
        async with httpx.AsyncClient(base_url=running.base, timeout=30) as http:
            _, _, _, large = await sent_large_image(Clients(http))
            lost = await lose_preview(running, settings, large)
            monkeypatch.setattr(previews, "RENDER_WAIT_SECONDS", 30.0)
            release = threading.Event()
            previews._RENDERER.submit(release.wait, 60)  # the repair waits, its read done
            try:
                answer = asyncio.create_task(http.get(local(large["previewUrl"])))
                await until(lambda: bool(running.runtime.preview_repairs._running))
                await outage.cut()
            finally:
                release.set()
            down = await asyncio.wait_for(answer, 30)
    finally:
        await stop_server(running)
    assert (down.status_code, down.headers.get("retry-after")) == (503, "1"), down.text
    # Nothing changed: the row still names the lost file, and no new file is left.
    assert len(stored_files(settings.upload_dir)) == 1
    direct = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
    try:
        kept = await direct.fetchval(
            "SELECT preview_key FROM attachments WHERE id = $1", uuid.UUID(large["id"])
        )
    finally:
        await direct.close()
    assert kept == lost
