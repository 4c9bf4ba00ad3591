"""`threadline serve` as a real child process, for tests that kill it, restart it or
measure its memory."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence

import httpx

# A loaded 2-core machine can take many seconds to import, migrate and bind.
START_SECONDS = 60.0


async def spawn_serve(
    port: int, env: dict[str, str], command: Sequence[str] = ("threadline", "serve")
) -> asyncio.subprocess.Process:
    """Starts `threadline serve` (or ``python -m`` another ``command``, such as uvicorn's)
    on ``port`` and returns once /healthz answers 200."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *command, "--port", str(port), "--log-level", "warning", env=env
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_SECONDS
    async with httpx.AsyncClient() as http:
        while loop.time() < deadline and proc.returncode is None:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc
            await asyncio.sleep(0.1)
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"threadline serve did not answer within {START_SECONDS:.0f} s")
    raise RuntimeError(f"threadline serve exited with {proc.returncode} before answering")
