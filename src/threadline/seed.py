"""Demo data for a first look: a few users, two threads and some messages."""

from __future__ import annotations

from threadline.config import Settings
from threadline.db import Database, make_engine
from threadline.services import messages, threads
from threadline.services.users import ensure_dev_user

DEMO_USERS = ("alice", "bob", "carol")


async def seed(settings: Settings) -> str:
    db = Database(make_engine(settings.database_url))
    try:
        async with db.transaction("seed_users") as uow:
            people = [await ensure_dev_user(uow, name) for name in DEMO_USERS]
        alice, bob, carol = people
        async with db.transaction("seed_threads") as uow:
            general = await threads.create_thread(
                uow, alice, "General", "Everyone's room", [str(bob.id), str(carol.id)]
            )
            direct = await threads.create_direct_thread(uow, alice, str(bob.id))
        lines = [
            (alice, general.id, "Welcome to Threadline, @bob and @carol!"),
            (bob, general.id, "Thanks! Glad to be here."),
            (carol, general.id, "Hello everyone 👋"),
            (alice, direct.id, "Lunch at noon?"),
            (bob, direct.id, "Sure."),
        ]
        count = 0
        for author, thread_id, body in lines:
            await messages.send_message(db, author, thread_id, body, client_id=f"seed-{count}")
            count += 1
        return f"seeded users {', '.join(DEMO_USERS)}; 2 threads; {count} messages"
    finally:
        await db.dispose()
