"""What a backup reads from the database it copies: revision, row counts, file keys.

One set of statements for both engines, run on a connection that sees exactly the
copied state (PostgreSQL: the exported snapshot; SQLite: the finished copy).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, inspect, select, table, text
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.models import Attachment, Base


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


async def holds_rows(connection: AsyncConnection) -> bool:
    """Whether any table of ours has a row (a migrated, unused database has none)."""
    return any((await count_rows(connection)).values())
