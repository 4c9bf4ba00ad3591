"""What a backup reads from the database it copies (revision, row counts, file keys), and
``Engine``, what PostgreSQL's and SQLite's backups share: a connection for one piece of work.

One set of statements for both engines, run on a connection that sees exactly the
copied state (PostgreSQL: the exported snapshot; SQLite: the finished copy).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import func, inspect, select, table, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from threadline.backups.manifest import BackupError
from threadline.config import without_passwords
from threadline.models import Attachment, Base

T = TypeVar("T")


@dataclass
class Facts:
    revision: str | None
    counts: dict[str, int]
    storage_keys: list[str]


async def table_names(connection: AsyncConnection) -> set[str]:
    return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def count_rows(connection: AsyncConnection) -> dict[str, int]:
    """Rows per table of the models, for the tables that exist."""
    present = await table_names(connection)
    counts: dict[str, int] = {}
    for model_table in Base.metadata.sorted_tables:
        if model_table.name in present:
            statement = select(func.count()).select_from(table(model_table.name))
            counts[model_table.name] = int((await connection.execute(statement)).scalar_one())
    return counts


async def read_facts(connection: AsyncConnection) -> Facts:
    present = await table_names(connection)
    revision = None
    if "alembic_version" in present:
        version = text("SELECT version_num FROM alembic_version")
        revision = (await connection.execute(version)).scalar()
    keys: set[str] = set()
    if Attachment.__tablename__ in present:
        # A database of an older revision has no preview column.
        columns = await connection.run_sync(
            lambda sync: {c["name"] for c in inspect(sync).get_columns(Attachment.__tablename__)}
        )
        for column in (Attachment.storage_key, Attachment.preview_key):
            if column.key in columns:
                named = select(column).where(column.is_not(None)).distinct()
                keys.update(key for key in (await connection.execute(named)).scalars() if key)
    return Facts(revision, await count_rows(connection), sorted(keys))


class Engine:
    backend: str
    file_name: str  # what the database is saved as in a backup folder
    database_url: str
    label: str  # how messages name the database

    async def _on_connection(
        self, work: Callable[[AsyncConnection], Awaitable[T]], **options: object
    ) -> T:
        engine = create_async_engine(self.database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                if options:
                    connection = await connection.execution_options(**options)
                async with connection.begin():
                    return await work(connection)
        except OSError as exc:
            raise BackupError(f"cannot reach {self.label}: {exc.strerror or exc}") from exc
        except SQLAlchemyError as exc:
            # The driver's own message, without SQLAlchemy's statement and link.
            detail = without_passwords(str(getattr(exc, "orig", None) or exc), self.database_url)
            raise BackupError(f"{self.label}: {detail}") from exc
        finally:
            await engine.dispose()

    async def holds_rows(self) -> bool:
        """Whether any table of ours has a row (a migrated, unused database has none)."""
        return any((await self._on_connection(count_rows)).values())

    async def facts(self) -> Facts:
        return await self._on_connection(read_facts)
