"""Slow clients: N connections that stall in their request head and N that stall in their
body, against a server with the default timeouts; how long each is held, what it is
answered, the server's RSS, and /healthz latency meanwhile.

usage: .venv/bin/python -m bench.slow_clients [--connections 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from bench.harness import cores_line, database, percentile, server


async def stall(port: int, opening: bytes, started: float) -> tuple[float, bytes]:
    """Send the opening bytes, then nothing: (seconds until the server closed, its answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(opening)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), 120)
    except (ConnectionError, TimeoutError):
        answer = b"(reset or still open after 120 s)"
    writer.close()
    return time.perf_counter() - started, answer.split(b"\r\n", 1)[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    print(cores_line())
    head = b"POST /graphql HTTP/1.1\r\nhost: bench\r\ncontent-type: appl"
    body = (
        b"POST /graphql HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n" + b'{"query": "{ me'
    )
    async with database() as (_, url), server(url, redis=False) as srv:
        port = int(srv.base.rsplit(":", 1)[1])
        before = srv.rss_kib()
        peak = before
        health: list[float] = []
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            async with httpx.AsyncClient(base_url=srv.base, timeout=30) as http:
                while not done.is_set():
                    peak = max(peak, srv.rss_kib())
                    t = time.perf_counter()
                    assert (await http.get("/healthz")).status_code == 200
                    health.append((time.perf_counter() - t) * 1000)
                    await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        results = await asyncio.gather(
            *(stall(port, head, started) for _ in range(args.connections)),
            *(stall(port, body, started) for _ in range(args.connections)),
        )
        done.set()
        await watcher
        for name, part in (
            ("slow head", results[: args.connections]),
            ("slow body", results[args.connections :]),
        ):
            held = [seconds for seconds, _ in part]
            answers: dict[bytes, int] = {}
            for _, answer in part:
                answers[answer] = answers.get(answer, 0) + 1
            print(
                f"{name}: {len(part)} connections held p50 {percentile(held, 0.5):.1f} s, "
                f"max {max(held):.1f} s; answers {answers}"
            )
        print(
            f"server RSS {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB; "
            f"/healthz p50 {percentile(health, 0.5):.0f} ms, max {max(health):.0f} ms "
            f"over {len(health)} polls"
        )


if __name__ == "__main__":
    asyncio.run(main())
