"""Sends stored together: the batcher itself, and concurrent sendMessage calls over
GraphQL (on PostgreSQL one statement stores many; on SQLite the general path runs,
and the same rules must hold).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete

from tests import factories
from tests.conftest import BACKEND, Api, Clients, Server
from threadline.batching import Batcher
from threadline.config import Settings
from threadline.db import DRIVER_ENTITIES, DRIVER_ROWS, Database, make_engine
from threadline.errors import NotFound
from threadline.models import SystemRole, Thread, ThreadParticipant, ThreadRole, User
from threadline.models.sends import PlainSend, store_plain_sends
from threadline.services.events import EventKind
from threadline.services.messages import send_message, thread_messages
from threadline.services.pagination import PageRequest
from threadline.services.permissions import access_thread, posting_rights

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # These tests are about the fast paths: on, whatever this run's FAST_PATHS says.
    return settings.model_copy(update={"fast_paths": True})


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


# ------------------------------------------------- the fast path's rule is grant's rule

PARTICIPANT_STATES = ["none", "removed", "MEMBER", "ADMIN", "OWNER", "muted"]


@pytest.mark.skipif(BACKEND != "postgres", reason="the group-commit statement is PostgreSQL's")
async def test_the_group_commit_statement_lets_post_exactly_whom_access_thread_lets_post(
    server: Server,
) -> None:
    """Every system role x participant state (none, removed, each thread role, muted)
    x live or deleted thread: the batched statement stores the send exactly when
    ``access_thread(..., MEMBER)``, the general path's check, lets the sender in."""
    db = server.runtime.db
    cells = list(itertools.product(SystemRole, PARTICIPANT_STATES, (False, True)))
    now = datetime.now(UTC)
    async with db.transaction("world") as uow:
        owner = User(clerk_id="dev_owner", username="owner", display_name="owner")
        uow.session.add(owner)
        senders = {}
        for system_role in SystemRole:
            name = f"sender_{system_role.value.lower()}"
            senders[system_role] = User(
                clerk_id=f"dev_{name}", username=name, display_name=name, role=system_role.value
            )
            uow.session.add(senders[system_role])
        await uow.session.flush()
        threads = {}
        for system_role, state, deleted in cells:
            thread = Thread(
                title="cell", created_by_id=owner.id, deleted_at=now if deleted else None
            )
            uow.session.add(thread)
            await uow.session.flush()
            threads[system_role, state, deleted] = thread.id
            uow.session.add(ThreadParticipant(thread_id=thread.id, user_id=owner.id, role="OWNER"))
            if state != "none":
                role = "MEMBER" if state in {"removed", "muted"} else state
                uow.session.add(
                    ThreadParticipant(
                        thread_id=thread.id,
                        user_id=senders[system_role].id,
                        role=role,
                        muted=state == "muted",
                    )
                )
        await uow.session.flush()
        for (system_role, state, _), thread_id in threads.items():
            if state == "removed":
                await uow.session.execute(
                    delete(ThreadParticipant).where(
                        ThreadParticipant.thread_id == thread_id,
                        ThreadParticipant.user_id == senders[system_role].id,
                    )
                )
    outcomes = {}
    for (system_role, state, deleted), thread_id in threads.items():
        sender = senders[system_role]
        async with db.reading() as session:
            try:
                await access_thread(session, sender, thread_id, ThreadRole.MEMBER)
                general = True
            except NotFound:
                general = False
        granted, roles = posting_rights(sender.system_role)
        send = PlainSend(
            id=uuid.uuid4(),
            thread_id=thread_id,
            author_id=sender.id,
            body="hi",
            client_id=None,
            at=datetime.now(UTC),
            granted=granted,
            roles=frozenset(roles),
            payload="{}",
        )
        stored = await store_plain_sends(db, [send], EventKind.MESSAGE_CREATED.value)
        outcomes[system_role.value, state, deleted] = general
        assert (0 in stored) == general, (system_role, state, deleted)
    # The matrix is not trivial: system OWNER/ADMIN post anywhere live, a MEMBER
    # only where a participant (muted too), nobody in a deleted thread.
    assert outcomes["MEMBER", "none", False] is False
    assert outcomes["MEMBER", "removed", False] is False
    assert outcomes["MEMBER", "muted", False] is True
    assert outcomes["ADMIN", "none", False] is True
    assert outcomes["OWNER", "removed", False] is True
    assert not any(allowed for (_, _, deleted), allowed in outcomes.items() if deleted)


@pytest.mark.skipif(BACKEND != "postgres", reason="the group-commit statement is PostgreSQL's")
async def test_the_group_commit_statement_does_not_wait_for_a_row_that_names_the_thread(
    server: Server, clients: Clients
) -> None:
    """A row being added under a thread (an upload, a participant) holds a KEY SHARE
    lock on the thread until it commits; the statement's FOR NO KEY UPDATE lets a
    send through meanwhile, as the general path's lock does."""
    alice, carol = await clients.users("alice", "carol")
    thread_id = uuid.UUID(await factories.thread(alice))
    db = server.runtime.db
    async with db.reading() as session:
        sender = await session.get(User, uuid.UUID(alice.id))
    assert sender is not None
    granted, roles = posting_rights(sender.system_role)
    send = PlainSend(
        uuid.uuid4(), thread_id, sender.id, "hi", None, datetime.now(UTC),
        granted, frozenset(roles), "{}",
    )  # fmt: skip
    async with db.sessions() as holder, holder.begin():
        holder.add(ThreadParticipant(thread_id=thread_id, user_id=uuid.UUID(carol.id)))
        await holder.flush()
        stored = await asyncio.wait_for(
            store_plain_sends(db, [send], EventKind.MESSAGE_CREATED.value), 5
        )
    assert stored == {0: 1}


async def test_with_fast_paths_off_sends_and_reads_go_the_general_way(
    server: Server, clients: Clients
) -> None:
    """FAST_PATHS=off: no session reads through the driver, and a plain send takes
    the general path's transaction, not the batched statement; both still work."""
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    db = Database(make_engine(server.runtime.settings.database_url), fast_paths=False)
    try:
        for sessions in (db.sessions, db.read_sessions, db.shared_sessions):
            async with sessions() as session:
                assert not session.info[DRIVER_ROWS]
                assert not session.info.get(DRIVER_ENTITIES)
        async with db.reading() as session:
            actor = await session.get(User, uuid.UUID(alice.id))
        assert actor is not None
        count_before, items_before = batches_of_sends()
        sent = await send_message(db, actor, thread_id, "plain and simple")
        assert batches_of_sends() == (count_before, items_before)
        async with db.shared_sessions() as session:
            page = await thread_messages(session, uuid.UUID(thread_id), PageRequest(last=5))
        assert [(m.id, m.seq, m.body) for m in page.items] == [(sent.id, 1, "plain and simple")]
    finally:
        await db.dispose()
    if BACKEND == "postgres":  # and on, the same send goes through the batcher
        count_before, _ = batches_of_sends()
        await factories.send(alice, thread_id, "fast")
        assert batches_of_sends()[0] == count_before + 1
