"""A Redis Cluster of a test's own (scripts/redis-cluster on ports of its own), for
tests that kill one of its masters and bring it back."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "redis-cluster"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 30000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


class OwnCluster:
    def __init__(self, folder: Path) -> None:
        self.ports = cluster_ports(3)
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        self._env = {
            **os.environ,
            "THREADLINE_REDIS_CLUSTER_PORTS": " ".join(map(str, self.ports)),
            "THREADLINE_REDIS_CLUSTER_DIR": str(folder),
        }

    async def _script(self, command: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            str(SCRIPT), command, env=self._env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/redis-cluster {command}: {err.decode()}{out.decode()}")

    async def start(self) -> None:
        """Create the cluster, or start the nodes that are down (they keep their slots)."""
        await self._script("start")

    async def stop(self) -> None:
        await self._script("stop")

    def kill(self, port: int) -> None:
        """kill -9 one node."""
        pid = int((self.folder / f"redis-{port}.pid").read_text())
        os.kill(pid, signal.SIGKILL)

    async def master_of(self, name: str) -> int:
        return await master_of(self.url, name)

    async def move_slot_of(self, name: str) -> int:
        """Reshard: hand the (keyless) slot of ``name`` to another master; its port."""
        slot = key_slot(name.encode())
        source = await self.master_of(name)
        target = next(port for port in self.ports if port != source)
        nodes = {port: Redis(port=port) for port in self.ports}
        try:
            ids = {port: await node.execute_command("CLUSTER MYID") for port, node in nodes.items()}
            await nodes[target].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])
            await nodes[source].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target])
            for port in (target, source, *(p for p in self.ports if p not in {source, target})):
                await nodes[port].execute_command("CLUSTER SETSLOT", slot, "NODE", ids[target])
        finally:
            for node in nodes.values():
                await node.aclose()
        return target


async def master_of(url: str, name: str) -> int:
    """The port of the master that serves a key or channel name."""
    client: Any = RedisCluster.from_url(url)
    slot = key_slot(name.encode())
    try:
        for (start, end), owner in (await client.execute_command("CLUSTER SLOTS")).items():
            if start <= slot <= end:
                return int(owner["primary"][1])
    finally:
        await client.aclose()
    raise LookupError(f"no master serves slot {slot}")
