"""Shared set-up of the benchmark scripts: a fresh PostgreSQL database, a server process, tokens.

Benchmarks are scripts, not tests: they print numbers and clean up after themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
SECRET = "bench-dev-secret-" + "k" * 32


# Columns of the rows the benchmarks seed by COPY, in the order their tuples give them.
USER_COLUMNS = [
    "id",
    "clerk_id",
    "username",
    "display_name",
    "role",
    "preferences",
    "created_at",
    "updated_at",
]
THREAD_COLUMNS = [
    "id",
    "title",
    "is_direct",
    "created_by_id",
    "created_at",
    "updated_at",
    "last_message_at",
    "last_activity_at",
    "last_seq",
]
PARTICIPANT_COLUMNS = [
    "thread_id",
    "user_id",
    "role",
    "joined_at",
    "last_read_seq",
    "last_delivered_seq",
    "muted",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, millis: list[float]) -> str:
    return (
        f"{name}: n={len(millis)} p50={percentile(millis, 0.5):.2f} ms "
        f"p99={percentile(millis, 0.99):.2f} ms mean={statistics.fmean(millis):.2f} ms"
    )


def token(username: str) -> str:
    from threadline.auth.tokens import mint_dev_token

    return mint_dev_token(SECRET, f"dev_{username}", username, ttl_seconds=7200)


@dataclass
class Server:
    base: str
    proc: asyncio.subprocess.Process
    database_url: str

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/graphql"

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process and its children (workers) so far."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        ticks = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    async def gc_pauses(self) -> dict[tuple[str, float], float]:
        """The server's GC pause histogram so far: (generation, bucket bound) -> count."""
        async with httpx.AsyncClient() as http:
            text = (await http.get(self.base + "/metrics", timeout=30)).text
        return {
            (sample.labels["generation"], float(sample.labels["le"])): sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "threadline_gc_pause_seconds"
            for sample in family.samples
            if sample.name.endswith("_bucket")
        }


def gc_pause_summary(
    before: list[dict[tuple[str, float], float]], after: list[dict[tuple[str, float], float]]
) -> dict[str, Any]:
    """Collections between two reads of each server's histogram, per generation: how
    many, how many took over 100 ms, and the bound of the slowest one's bucket."""
    summary: dict[str, Any] = {}
    for generation in ("0", "1", "2"):
        counts: dict[float, float] = {}
        for old, new in zip(before, after, strict=True):
            for (gen, bound), value in new.items():
                if gen == generation:
                    counts[bound] = counts.get(bound, 0) + value - old.get((gen, bound), 0)
        total = counts.get(float("inf"), 0)
        slow = total - counts.get(0.1, 0)
        slowest = min((b for b, c in counts.items() if c == total), default=0.0)
        summary[f"gen{generation}"] = {
            "collections": int(total),
            "over100ms": int(slow),
            "slowestUnderS": slowest if total else None,
        }
    return summary


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[tuple[str, str]]:
    """A fresh, migrated database: (asyncpg DSN, SQLAlchemy URL)."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{PG}/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    dsn = f"{PG}/{name}"
    url = "postgresql+asyncpg://" + dsn.removeprefix("postgresql://")
    from threadline.migrate import upgrade_to_head_async

    await upgrade_to_head_async(url)
    try:
        yield dsn, url
    finally:
        admin = await asyncpg.connect(f"{PG}/postgres")
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@contextlib.asynccontextmanager
async def server(
    database_url: str,
    *,
    redis: bool = True,
    pin: str | None = "0",
    workers: int = 1,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Server]:
    """`threadline serve`, by default one process on its own core (taskset).

    `extra_env` is applied last (another REDIS_URL, REDIS_CLUSTER, a pooler)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEV_AUTH_SECRET": SECRET,
        "RATE_LIMITS": "off",
    }
    if redis:
        env["REDIS_URL"] = REDIS_URL
    else:
        env.pop("REDIS_URL", None)
    env.update(extra_env or {})
    command = [
        sys.executable,
        "-m",
        "threadline",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--workers",
        str(workers),
    ]
    if pin is not None and (os.cpu_count() or 1) >= 2:
        command = ["taskset", "-c", pin, *command]
    proc = await asyncio.create_subprocess_exec(*command, env=env)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{base}/healthz")).status_code == 200:
                    break
            await asyncio.sleep(0.1)
        else:
            proc.kill()
            raise RuntimeError("server did not start")
    pid_proc = proc
    if pin is not None:
        # taskset execs python, so the pid is the server's own.
        pass
    try:
        yield Server(base, pid_proc, database_url)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()


async def gql(
    http: httpx.AsyncClient, tok: str, query: str, variables: dict[str, object] | None = None
) -> dict:  # type: ignore[type-arg]
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"authorization": f"Bearer {tok}"},
    )
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]  # type: ignore[no-any-return]


class RawHTTP:
    """One keep-alive HTTP/1.1 connection that posts JSON: a load generator's client.

    httpx spends about 1.8 ms of CPU per request on this machine, more than the
    server it is measuring; this costs a few tens of microseconds.
    """

    def __init__(self, base: str, tok: str) -> None:
        host, _, port = base.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port or 80)
        self.auth = f"Bearer {tok}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, document: dict[str, object], tok: str | None = None) -> dict:  # type: ignore[type-arg]
        """POST a JSON document; `tok` signs this one request in as someone else."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        body = orjson.dumps(document)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Authorization: {f'Bearer {tok}' if tok else self.auth}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        status_line, *header_lines = (
            (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        )
        headers = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (h.partition(":") for h in header_lines if h)
        )
        payload = await self._reader.readexactly(int(headers["content-length"]))
        if not status_line.split()[1].startswith("2"):
            raise RuntimeError(f"{status_line}: {payload[:200]!r}")
        result = orjson.loads(payload)
        if result.get("errors"):
            raise RuntimeError(result["errors"])
        return result["data"]  # type: ignore[no-any-return]

    async def gql(
        self, query: str, variables: dict[str, object] | None = None, tok: str | None = None
    ) -> dict:  # type: ignore[type-arg]
        return await self.post("/graphql", {"query": query, "variables": variables or {}}, tok)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None


def cores_line() -> str:
    return f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}"


def now_ms() -> float:
    return time.perf_counter() * 1000
