"""Helpers of the tests for operators: settings as the environment would give them,
a port nobody listens on, and the command as an operator runs it."""

from __future__ import annotations

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
