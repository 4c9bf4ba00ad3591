"""Attachments get an optional preview file: a small WebP of a large image.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Nullable, with no default: adding it rewrites no rows on either database, and
attachments stored before have no preview (clients fall back to the file itself).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("attachments") as batch:
        batch.add_column(sa.Column("preview_key", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attachments") as batch:
        batch.drop_column("preview_key")
