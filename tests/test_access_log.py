"""`threadline serve` logs each request's path but never its query string: a signed
attachment URL (or a token a client put in a URL) is a credential."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import DEV_SECRET, SIGNING_SECRET, database_environment, free_port
from tests.deployment import SRC
from threadline.config import Settings

# The log line of the HTTP layer: the SQLite row of the test command skips it.
pytestmark = pytest.mark.any_backend


async def test_serve_logs_request_paths_without_their_query_strings(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "THREADLINE_ENV"}},
        "PYTHONPATH": str(SRC),
        **database_environment(settings.database_url),
        "DEV_AUTH_SECRET": DEV_SECRET,
        "ATTACHMENT_SIGNING_SECRET": SIGNING_SECRET,
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        **({"REDIS_URL": settings.redis_url} if settings.redis_url else {}),
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        # The default --log-level, info: the one operators run with.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "threadline",
            "serve",
            "--port",
            str(port),
            env=env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=log_file,
        )
        base = f"http://127.0.0.1:{port}"
        attachment = f"/attachments/{uuid.uuid4()}/report.pdf"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"the server did not start: {log_path.read_text()}")
                download = await http.get(f"{attachment}?exp=4102444800&sig=SIGNATURE-SECRET")
                assert download.status_code in (403, 404)
                await http.get("/healthz?token=HEALTHZ-SECRET")
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/graphql?token=SOCKET-SECRET",
                subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            ):
                pass
            # Request targets in absolute and asterisk form: uvicorn logs them without the
            # leading "/" (they were logged with their query strings).
            for target in (
                f"ws://127.0.0.1:{port}/graphql?token=ABSOLUTE-SECRET",
                "*?t=STAR-SECRET",
            ):
                await upgrade_request(port, target)
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    logged = log_path.read_text()
    # The requests were logged (so the check below is about something), paths only.
    assert f'"GET {attachment} HTTP/1.1" {download.status_code}' in logged, logged
    assert '"GET /healthz HTTP/1.1" 200' in logged, logged
    assert '"WebSocket /graphql" [accepted]' in logged, logged
    assert '"WebSocket ws%3A//127.0.0.1' in logged and '"WebSocket %2A" 403' in logged, logged
    assert "SECRET" not in logged, logged
    assert "sig=" not in logged and "exp=" not in logged


async def upgrade_request(port: int, target: str) -> None:
    """A WebSocket upgrade for ``target`` exactly as given, its answer read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    writer.close()
    await writer.wait_closed()
