"""Helpers of the tests for operators: settings as the environment would give them,
a port nobody listens on, a server that can be cut off, and the command as an
operator runs it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import DEV_SECRET, database_environment
from threadline.config import Settings

SRC = Path(__file__).resolve().parent.parent / "src"


def variant(settings: Settings, **changes: Any) -> Settings:
    """The test's settings with some changed, validated as the environment would be."""
    return Settings(**{**settings.model_dump(), **changes}, _env_file=None)  # type: ignore[call-arg]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Outage:
    """A TCP forwarder on a port of its own to a local server, which a test cuts (every
    connection through it closed, new ones refused, as a host that goes down looks to
    the app) and may bring back on the same port."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = closed_port()
        self.streams: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.listener = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        return self.port

    async def cut(self) -> None:
        self.listener.close()
        for stream in self.streams:
            stream.close()
        self.streams.clear()
        await self.listener.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        far_reader, far_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.streams += [writer, far_writer]
        await asyncio.gather(_pipe(reader, far_writer), _pipe(far_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def threadline(
    *args: str, database_url: str, tmp_path: Path, **environment: str
) -> subprocess.CompletedProcess[str]:
    """The installed command as an operator runs it, in a folder of its own."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "THREADLINE_ENV"}},
        "PYTHONPATH": str(SRC),
        **database_environment(database_url),
        "DEV_AUTH_SECRET": DEV_SECRET,
        **environment,
    }
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
