"""Demo data for a first look: a few users, two threads and some messages. Seeding again
adds nothing: users and threads are found again, and the messages carry client ids.
"""

from __future__ import annotations

from threadline.config import Settings
from threadline.db import Database, make_engine
from threadline.services import messages, threads
from threadline.services.pagination import PageRequest
from threadline.services.users import ensure_dev_user

DEMO_USERS = ("alice", "bob", "carol")
GENERAL = "General"


async def seed(settings: Settings) -> str:
    db = Database(make_engine(settings.database_url, pooled=settings.pooled))
    try:
        async with db.transaction("seed_users") as uow:
            people = [await ensure_dev_user(uow, name) for name in DEMO_USERS]
        alice, bob, carol = people
        async with db.reading() as session:
            page = await threads.threads_of(session, alice, GENERAL, PageRequest(first=100))
        # The "General" thread an earlier seed made for alice, if there is one.
        general = next((a.thread for a in page.items if a.thread.title == GENERAL), None)
        async with db.transaction("seed_threads") as uow:
            if general is None:
                general = await threads.create_thread(
                    uow, alice, GENERAL, "Everyone's room", [str(bob.id), str(carol.id)]
                )
            direct = await threads.create_direct_thread(uow, alice, str(bob.id))
        lines = [
            (alice, general.id, "Welcome to Threadline, @bob and @carol!"),
            (bob, general.id, "Thanks! Glad to be here."),
            (carol, general.id, "Hello everyone 👋"),
            (alice, direct.id, "Lunch at noon?"),
            (bob, direct.id, "Sure."),
        ]
        for count, (author, thread_id, body) in enumerate(lines):
            await messages.send_message(db, author, thread_id, body, client_id=f"seed-{count}")
        return f"seeded users {', '.join(DEMO_USERS)}; 2 threads; {len(lines)} messages"
    finally:
        await db.dispose()
