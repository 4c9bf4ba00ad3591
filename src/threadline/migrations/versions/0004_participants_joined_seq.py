"""Participants remember the thread's last seq when they joined: older messages are not unread.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Rows of earlier joins get 0 (the server default): their unread counts stay as they were.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("thread_participants") as batch:
        batch.add_column(sa.Column("joined_seq", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("thread_participants") as batch:
        batch.drop_column("joined_seq")
