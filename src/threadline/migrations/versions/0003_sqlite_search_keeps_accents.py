"""On SQLite, search tells accented letters apart, as PostgreSQL's does.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

FTS5's unicode61 tokenizer took diacritics off ("café" was indexed as "cafe"), so
that "cafe" found "café" on SQLite only; PostgreSQL's english configuration keeps
them. The index is built again with ``remove_diacritics 0``. The triggers that keep
it current name the table, not its tokenizer, and stay. PostgreSQL is unchanged.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _index_with("porter unicode61 remove_diacritics 0")


def downgrade() -> None:
    _index_with("porter unicode61")


def _index_with(tokenize: str) -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    op.execute("DROP TABLE messages_fts")
    op.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5("
        f"body, content='messages', content_rowid='rowid', tokenize='{tokenize}')"
    )
    op.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
