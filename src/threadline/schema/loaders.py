"""Per-operation DataLoaders: every field that fans out is batched through one.

A page of 50 messages asks for authors, reactions, attachments, parents, reply
counts, edits and receipt markers once each, not 50 times.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from strawberry.dataloader import DataLoader

from threadline import models
from threadline.realtime.presence import PresenceState
from threadline.services import messages, permissions, receipts, threads, users
from threadline.services.messages import ReactionGroup

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from threadline.schema.context import Context

K = uuid.UUID


class Loaders:
    """An operation's DataLoaders, each made on first use, and dropped when the operation
    ends: a loader and its batch function form a cycle, and an operation's worth of them
    left to the cyclic GC made its pauses the p99 of a busy process."""

    def __init__(self, context: Context) -> None:
        self._context = context
        # The GraphQL User objects built in this operation, by user id (types.user_type).
        self.user_types: dict[K, Any] = {}

    def drop(self) -> None:
        context = self._context
        self.__dict__.clear()
        self._context = context
        self.user_types = {}

    @cached_property
    def user(self) -> DataLoader[K, models.User | None]:
        return DataLoader(self._users)

    @cached_property
    def message(self) -> DataLoader[K, models.Message | None]:
        return self._many(messages.messages_by_ids)

    @cached_property
    def thread(self) -> DataLoader[K, models.Thread | None]:
        # Only threads the viewer may read now (permissions.grant): the door that
        # every field leading into a thread, its messages or participants goes through.
        return DataLoader(self._threads)

    @cached_property
    def my_participation(self) -> DataLoader[K, models.ThreadParticipant | None]:
        return DataLoader(self._mine)

    @cached_property
    def reply_count(self) -> DataLoader[K, int]:
        return self._many(messages.reply_counts, 0)

    @cached_property
    def attachments(self) -> DataLoader[K, list[models.Attachment]]:
        return self._many(messages.attachments_of, [])

    @cached_property
    def edits(self) -> DataLoader[K, list[models.MessageEdit]]:
        return self._many(messages.edits_of, [])

    @cached_property
    def reactions(self) -> DataLoader[K, list[ReactionGroup]]:
        return DataLoader(self._reactions)

    @cached_property
    def markers(self) -> DataLoader[K, list[receipts.Marker]]:
        return self._many(receipts.markers_of, [])

    @cached_property
    def last_message(self) -> DataLoader[K, models.Message | None]:
        return self._many(messages.last_messages)

    @cached_property
    def pinned(self) -> DataLoader[K, list[models.Message]]:
        return self._many(messages.pinned_of, [])

    @cached_property
    def unread_count(self) -> DataLoader[K, int]:
        return DataLoader(self._unread)

    @cached_property
    def presence(self) -> DataLoader[tuple[K, datetime | None], PresenceState]:
        # By (user id, last seen as stored): a page's presence in one Redis round trip;
        # without Redis, as far as this process knows (the rest of the page stands).
        return DataLoader(self._context.runtime.presence.get_many)

    @staticmethod
    async def preload(loader: DataLoader[K, Any], keys: Iterable[K]) -> None:
        """Fill a loader's cache for these keys with one call of its batch function:
        ``load_many`` without a pending future and a wake-up per key (a page has hundreds)."""
        missing = [k for k in dict.fromkeys(keys) if loader.cache_map.get(k) is None]
        if missing:
            values = await loader.load_fn(missing)
            loader.prime_many(dict(zip(missing, values, strict=True)))

    async def _session(self) -> AsyncSession:
        return await self._context.session()

    def _many(
        self,
        fetch: Callable[[AsyncSession, Sequence[K]], Awaitable[dict[K, Any]]],
        empty: Any = None,
    ) -> DataLoader[K, Any]:
        """A loader of ``fetch``'s answers by key, ``empty`` for a key it does not know."""

        async def load(keys: list[K]) -> list[Any]:
            found = await fetch(await self._session(), keys)
            return [found.get(k, empty) for k in keys]

        return DataLoader(load)

    async def _users(self, keys: list[K]) -> list[models.User | None]:
        # A short-lived cache shared by the process: one event fanned out to many
        # subscribers looks its author up once.
        cache = self._context.runtime.user_cache
        known = {k: u for k in keys if (u := cache.get(k)) is not None}
        missing = [k for k in keys if k not in known]
        if missing:
            found = await users.users_by_ids(await self._session(), missing)
            for user_id, user in found.items():
                cache.put(user_id, user)
            known.update(found)
        return [known.get(k) for k in keys]

    async def _threads(self, keys: list[K]) -> list[models.Thread | None]:
        # Threads the operation already checked access to are known: no query.
        context = self._context
        known = {tid: a.thread for tid, a in context.access.items()}
        missing = [k for k in keys if k not in known]
        shown = context.broadcast_thread
        if shown is not None:
            # A broadcast frame has no viewer: its subscribers were each checked
            # for this one thread (and leave when removed); nothing else is shown.
            if shown in missing:
                row = (await threads.threads_by_ids(await self._session(), [shown])).get(shown)
                if row is not None and row.deleted_at is None:
                    known[shown] = row
        elif missing:
            viewer = await context.viewer()
            async with context.checks() as session:  # the primary, even when content is not
                found = await permissions.visible_threads(session, viewer, missing)
            context.access.update(found)  # my_participation reads them too
            known.update((tid, a.thread) for tid, a in found.items())
        return [known.get(k) for k in keys]

    async def _mine(self, keys: list[K]) -> list[models.ThreadParticipant | None]:
        viewer = await self._context.viewer()
        known = {tid: a.participant for tid, a in self._context.access.items()}
        missing = [k for k in keys if k not in known]
        if missing:
            known.update(await threads.participations(await self._session(), viewer.id, missing))
        return [known.get(k) for k in keys]

    async def _reactions(self, keys: list[K]) -> list[list[ReactionGroup]]:
        groups = await messages.reaction_groups(await self._session(), keys)
        # The reactors the groups show, in the same go: mostly from the user cache.
        shown = {uid for found in groups.values() for g in found for uid in g.first_user_ids}
        await self.preload(self.user, sorted(shown))
        return [groups.get(k, []) for k in keys]

    async def _unread(self, keys: list[K]) -> list[int]:
        viewer = await self._context.viewer()
        counts = await receipts.unread_counts(await self._session(), viewer, keys)
        return [counts.get(k, 0) for k in keys]
