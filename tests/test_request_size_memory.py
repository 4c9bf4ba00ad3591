"""A 500 MB JSON POST with no token costs a real server process almost no memory.

`threadline serve` runs as a process of its own (so that its RSS is its own, not
the test's); the body is generated as it is sent and never held by the client,
which stops once the answer is in. The server's RSS is sampled every few
milliseconds throughout; /healthz is polled meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_http_limits import Answer, chunked, exchange
from tests.test_multiprocess import Process, spawn, stop
from threadline.config import Settings

# Refused before anything is stored: the SQLite row of the test command skips it.
pytestmark = pytest.mark.any_backend

BODY_BYTES = 500 * 1024 * 1024
PIECE = 256 * 1024
MAX_GROWTH = 10 * 1024 * 1024


@pytest.fixture
async def process(settings: Settings, redis_url: str | None) -> AsyncIterator[Process]:
    running = await spawn(settings, redis_url or "")  # "" is unset: in-process broadcast
    yield running
    await stop(running)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def json_body() -> Iterator[bytes]:
    """500 MB of one JSON operation (a huge unused variable), made as it is sent."""
    prefix = b'{"query": "{ me { id } }", "variables": {"padding": "'
    suffix = b'"}}'
    yield prefix
    filler = b"p" * PIECE
    for _ in range((BODY_BYTES - len(prefix) - len(suffix)) // PIECE):
        yield filler
    yield suffix


class Watch:
    """Samples the server's RSS and /healthz latency until stopped."""

    def __init__(self, process: Process) -> None:
        self.pid = process.proc.pid
        self.base = process.base
        self.peak = 0
        self.health: list[float] = []
        self._stop = asyncio.Event()

    async def _rss(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            await asyncio.sleep(0.005)

    async def _healthz(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert (await http.get("/healthz")).status_code == 200
                self.health.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)

    async def during(self, work: asyncio.Future[Answer]) -> Answer:
        tasks = [asyncio.create_task(self._rss()), asyncio.create_task(self._healthz())]
        try:
            answer = await work
            await asyncio.sleep(0.3)  # what the server does right after answering counts too
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)
        self._stop.clear()
        return answer


async def warm_up(process: Process) -> None:
    """Run each code path once, so that what it imports and caches is in the baseline."""
    async with httpx.AsyncClient(base_url=process.base, timeout=30) as http:
        for _ in range(3):
            await http.get("/healthz")
            await http.post("/graphql", json={"query": "{ me { id } }"})
            await http.post(
                "/graphql",
                content=b" " * (2 * 1024 * 1024),
                headers={"content-type": "application/json"},
            )


def head(*lines: str) -> bytes:
    return "\r\n".join(["POST /graphql HTTP/1.1", "host: test", *lines, "", ""]).encode()


async def test_a_500_mb_json_post_without_a_token_gets_413_and_costs_under_10_mib(
    process: Process,
) -> None:
    await warm_up(process)
    await asyncio.sleep(0.5)
    before = rss_bytes(process.proc.pid)

    streamed = Watch(process)
    answer = await streamed.during(
        asyncio.ensure_future(
            exchange(
                process.base,
                head("content-type: application/json", "transfer-encoding: chunked"),
                chunked(json_body()),
            )
        )
    )
    assert answer.status == 413
    assert answer.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"

    declared = Watch(process)
    declared_answer = await declared.during(
        asyncio.ensure_future(
            exchange(
                process.base,
                head("content-type: application/json", f"content-length: {BODY_BYTES}"),
                json_body(),
            )
        )
    )
    assert declared_answer.status == 413

    growth = max(streamed.peak, declared.peak) - before
    worst_health = max(streamed.health + declared.health)
    print(
        f"\nserver RSS {before / 2**20:.1f} MiB before; peak growth {growth / 2**20:.2f} MiB "
        f"(chunked: 413 after {answer.sent / 2**20:.1f} MiB sent in {answer.seconds:.2f} s; "
        f"Content-Length {BODY_BYTES}: 413 after {declared_answer.sent / 2**20:.1f} MiB sent "
        f"in {declared_answer.seconds:.2f} s); /healthz slowest {worst_health * 1000:.0f} ms "
        f"over {len(streamed.health) + len(declared.health)} polls"
    )
    assert growth < MAX_GROWTH
    assert streamed.health and declared.health
    assert worst_health < 2.0
