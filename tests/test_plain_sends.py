"""Sends stored together: the batcher itself, and concurrent sendMessage calls over
GraphQL (on PostgreSQL one statement stores many; on SQLite the general path runs,
and the same rules must hold).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from tests import factories
from tests.conftest import BACKEND, Api, Clients
from threadline.batching import Batcher

pytestmark = pytest.mark.asyncio

REMOVE = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"
HISTORY = """
query($t: ID!) {
  thread(threadId: $t) {
    lastSeq
    messages(first: 100) { edges { node { seq body clientId author { id } } } }
  }
}
"""


# ------------------------------------------------------------------------ the batcher


async def test_a_lone_item_goes_at_once_and_items_that_wait_go_together() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            await release.wait()
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(run, max_size=3, name="test")
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert batches == [[1]]  # nobody waited for company
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(2, 7)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    assert [await r for r in rest] == [20, 30, 40, 50, 60]
    assert batches == [[1], [2, 3, 4], [5, 6]]  # in order, at most max_size


async def test_a_failing_batch_fails_its_items_only() -> None:
    calls = 0

    async def run(items: Sequence[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.01)
            raise ValueError("storage said no")
        return [s.upper() for s in items]

    batcher: Batcher[str, str] = Batcher(run, max_size=10, name="test")
    doomed = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0)
    later = asyncio.create_task(batcher.submit("b"))
    with pytest.raises(ValueError, match="storage said no"):
        await doomed
    assert await later == "B"
    assert await batcher.submit("c") == "C"  # and it starts again when idle


async def test_a_wrong_number_of_answers_is_an_error_not_a_hang() -> None:
    async def run(items: Sequence[int]) -> list[int]:
        return []

    batcher: Batcher[int, int] = Batcher(run, max_size=10, name="test")
    with pytest.raises(RuntimeError, match="0 answers for 1 items"):
        await asyncio.wait_for(batcher.submit(1), 5)


# --------------------------------------------------------------- sends over GraphQL


def batches_of_sends() -> tuple[float, float]:
    labels = {"name": "threadline-plain-sends"}
    count = REGISTRY.get_sample_value("threadline_batch_items_count", labels) or 0.0
    total = REGISTRY.get_sample_value("threadline_batch_items_sum", labels) or 0.0
    return count, total


async def thread_state(api: Api, thread_id: str) -> tuple[int, list[dict[str, object]]]:
    data = (await api.gql(HISTORY, {"t": thread_id}))["thread"]
    return int(data["lastSeq"]), [e["node"] for e in data["messages"]["edges"]]


async def test_concurrent_sends_in_many_threads_are_numbered_per_thread_without_gaps(
    clients: Clients,
) -> None:
    owners = [await clients.user(f"owner{i}") for i in range(6)]
    outsider, removed = await clients.user("outsider"), await clients.user("removed")
    threads = [await factories.thread(owner, removed) for owner in owners]
    for owner, thread_id in zip(owners, threads, strict=True):
        await owner.gql(REMOVE, {"t": thread_id, "u": removed.id})
    before = [(await thread_state(owner, t))[0] for owner, t in zip(owners, threads, strict=True)]
    count_before, items_before = batches_of_sends()

    async def send(api: Api, thread_id: str, body: str) -> dict[str, object] | str | None:
        response = await api.raw(factories.SEND, {"i": {"threadId": thread_id, "body": body}})
        if response.get("errors"):
            code: str | None = response["errors"][0]["extensions"]["code"]
            return code
        sent: dict[str, object] = response["data"]["sendMessage"]
        return sent

    calls = []
    for k, (owner, thread_id) in enumerate(zip(owners, threads, strict=True)):
        calls += [send(owner, thread_id, f"t{k} m{j}") for j in range(8)]
        calls += [send(outsider, thread_id, "let me in"), send(removed, thread_id, "still here?")]
    results = await asyncio.gather(*calls)

    refusals = [r for r in results if isinstance(r, str)]
    assert refusals == ["NOT_FOUND"] * 12
    for k, (owner, thread_id) in enumerate(zip(owners, threads, strict=True)):
        last, messages = await thread_state(owner, thread_id)
        new = [m for m in messages if int(m["seq"]) > before[k]]  # type: ignore[call-overload]
        assert last == before[k] + 8
        assert sorted(int(m["seq"]) for m in new) == list(range(before[k] + 1, last + 1))  # type: ignore[call-overload]
        assert sorted(str(m["body"]) for m in new) == sorted(f"t{k} m{j}" for j in range(8))
        assert {m["author"]["id"] for m in new} == {owner.id}  # type: ignore[index]
    if BACKEND == "postgres":
        count, items = batches_of_sends()
        assert items - items_before == 60  # every send went through the batcher once
        assert count - count_before < 60  # and some went together


async def test_an_existing_client_id_among_concurrent_sends_stores_it_once_and_the_rest(
    clients: Clients,
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    first = await factories.send(alice, thread_id, "original", clientId="retry-me")
    results = await asyncio.gather(
        *(factories.send(bob, thread_id, f"plain {i}") for i in range(10)),
        *(factories.send(alice, thread_id, "retried", clientId="retry-me") for _ in range(3)),
        *(factories.send(bob, thread_id, "new key", clientId="bob-1") for _ in range(2)),
    )
    retried = results[10:13]
    assert {r["id"] for r in retried} == {first["id"]}
    assert results[13]["id"] == results[14]["id"]
    last, messages = await thread_state(alice, thread_id)
    assert sorted(int(m["seq"]) for m in messages) == list(range(1, last + 1))  # type: ignore[call-overload]
    bodies = sorted(str(m["body"]) for m in messages)
    assert bodies.count("original") == 1
    assert "retried" not in bodies
    assert bodies.count("new key") == 1
    assert sum(b.startswith("plain ") for b in bodies) == 10
