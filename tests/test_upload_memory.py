"""Must-show: a 100 MiB upload against the 25 MiB limit is refused while the server's
RSS grows by less than 10 MiB, and leaves no file behind.

The server runs in a subprocess (`threadline serve`) so that its RSS is its own,
read from /proc/<pid>/status; the client streams the body from a generator, so
neither side needs to hold 100 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEV_SECRET, SIGNING_SECRET, database_environment, free_port, token_for
from tests.processes import spawn_serve
from tests.uploads import PREFLIGHT, UPLOAD, image, many_entries_docx, plain_zip
from threadline.config import Settings

# Refused before anything is stored: the SQLite row of the test command skips it.
pytestmark = pytest.mark.any_backend

MIB = 1024 * 1024
LIMIT = 25 * MIB
SENT = 100 * MIB


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@contextlib.asynccontextmanager
async def _serve(settings: Settings, tmp: Path) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    (tmp / "spool").mkdir()
    env = {
        **os.environ,
        **database_environment(settings.database_url),
        "DEV_AUTH_SECRET": DEV_SECRET,
        "ATTACHMENT_SIGNING_SECRET": SIGNING_SECRET,
        "RATE_LIMITS": "off",
        "UPLOAD_DIR": str(settings.upload_dir),
        "MAX_UPLOAD_BYTES": str(LIMIT),
        # Where the form parser spools: checked for leftovers too.
        "TMPDIR": str(tmp / "spool"),
    }
    env.pop("REDIS_URL", None)
    proc = await spawn_serve(port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _multipart(thread_id: str) -> tuple[str, list[bytes], int]:
    """A multipart upload of SENT bytes: the parts around the file, and the length."""
    boundary = "tl" + uuid.uuid4().hex
    operations = json.dumps({"query": UPLOAD, "variables": {"t": thread_id, "file": None}})
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
        f"{operations}\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="map"\r\n\r\n'
        f'{{"0": ["variables.file"]}}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="0"; filename="huge.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return boundary, [head, image(), tail], len(head) + SENT + len(tail)


# Without a body guard in front, this holds too: the form parser spools the part to
# an unlinked temporary file (1 MiB in memory), and the upload service stops copying
# at the limit. With the guard (branch limits) the body is refused before parsing.
@pytest.mark.slow
async def test_a_100_mib_upload_is_refused_with_little_memory_and_nothing_kept(
    settings: Settings, tmp_path: Path
) -> None:
    async with _serve(settings, tmp_path) as (base, pid):
        headers = {"authorization": f"Bearer {token_for('alice')}"}
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            created = await http.post(
                "/graphql",
                json={"query": 'mutation { createThread(input: {title: "Big"}) { id } }'},
                headers=headers,
            )
            tid = created.json()["data"]["createThread"]["id"]
            boundary, (head, png, tail), length = _multipart(tid)

            async def body() -> AsyncIterator[bytes]:
                yield head + png
                zeros = bytes(MIB)
                left = SENT - len(png)
                while left > 0:
                    yield zeros[: min(MIB, left)]
                    left -= MIB
                yield tail

            before = _kib(pid, "VmRSS")
            # Reset the peak so that VmHWM measures this request only.
            await asyncio.to_thread(Path(f"/proc/{pid}/clear_refs").write_text, "5")
            peak = before
            done = False

            async def sample() -> None:
                nonlocal peak
                while not done:
                    peak = max(peak, _kib(pid, "VmRSS"))
                    await asyncio.sleep(0.02)

            sampler = asyncio.create_task(sample())
            response: httpx.Response | None = None
            try:
                response = await http.post(
                    "/graphql",
                    content=body(),
                    headers={
                        **headers,
                        "apollo-require-preflight": "true",
                        "content-type": f"multipart/form-data; boundary={boundary}",
                        "content-length": str(length),
                    },
                )
            except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
                response = None  # refused while we were still sending: the guard's way
            finally:
                done = True
                await sampler
            peak = max(peak, _kib(pid, "VmHWM"))
        grown_mib = (peak - before) / 1024
        print(f"server RSS {before / 1024:.1f} MiB before, peak +{grown_mib:.1f} MiB")
        if response is not None:
            assert response.status_code in (200, 413), response.text
            assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        await asyncio.sleep(0.5)  # the refusal's clean-up has run
        leftovers = [
            p
            for root in (settings.upload_dir, tmp_path / "spool")
            if root.exists()
            for p in root.rglob("*")
            if p.is_file()
        ]
        assert leftovers == []
    assert grown_mib < 10


# The zip bomb that is never decompressed: ~250,000 empty entries in ~24 MB. zipfile
# alone would build an object per entry (+143 MiB measured); the end record is read
# first, and the upload refused from it.
@pytest.mark.slow
async def test_a_docx_of_250000_entries_is_refused_with_little_memory(
    settings: Settings, tmp_path: Path
) -> None:
    data = await asyncio.to_thread(many_entries_docx, 250_000)
    assert len(data) < LIMIT
    async with _serve(settings, tmp_path) as (base, pid):
        headers = {"authorization": f"Bearer {token_for('alice')}", **PREFLIGHT}
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            created = await http.post(
                "/graphql",
                json={"query": 'mutation { createThread(input: {title: "Zip"}) { id } }'},
                headers=headers,
            )
            tid = created.json()["data"]["createThread"]["id"]
            operations = {"query": UPLOAD, "variables": {"t": tid, "file": None}}
            form = {
                "operations": json.dumps(operations),
                "map": json.dumps({"0": ["variables.file"]}),
            }
            # Warm up the upload path with a small refused zip, so the measure is the bomb's.
            small = await http.post(
                "/graphql",
                data=form,
                files={"0": ("a.docx", plain_zip())},
                headers=headers,
            )
            assert small.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            before = _kib(pid, "VmRSS")
            await asyncio.to_thread(Path(f"/proc/{pid}/clear_refs").write_text, "5")
            response = await http.post(
                "/graphql",
                data=form,
                files={"0": ("report.docx", data, "application/zip")},
                headers=headers,
            )
            peak = max(before, _kib(pid, "VmHWM"))
    grown_mib = (peak - before) / 1024
    print(f"server RSS {before / 1024:.1f} MiB before, peak +{grown_mib:.1f} MiB")
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "too many entries" in error["message"]
    assert grown_mib < 30
