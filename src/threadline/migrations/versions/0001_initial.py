"""Initial schema: every table of threadline.models, plus full-text search on messages.

Revision ID: 0001
Revises:
Create Date: 2025-11-25

Tables are in dependency order; constraint and index names are those the models'
naming convention gives, written out so that this revision never changes when the
models do.

Search is outside the models (env.py says why) and differs by database:

- PostgreSQL: ``messages.search_vector``, generated from ``to_tsvector('english', body)``,
  with a GIN index. The ``english`` configuration stems ("running" finds "run") and
  drops stop words; queries must use the same one, e.g.
  ``search_vector @@ plainto_tsquery('english', :q)``.
- SQLite: ``messages_fts``, an FTS5 index over ``messages.body`` with the porter
  stemmer, external content (the text stays in ``messages``) keyed by the implicit
  ``messages.rowid``, since the UUID primary key cannot be an FTS5 rowid. Triggers
  keep it current. Query with
  ``SELECT ... FROM messages_fts JOIN messages ON messages.rowid = messages_fts.rowid
  WHERE messages_fts MATCH :q``.
"""

from collections.abc import Sequence
from textwrap import dedent

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The storage types behind threadline.models.base.UTCDateTime and JSONDocument.
UTC_DATETIME = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROLE = sa.String(16)

SQLITE_FTS_TRIGGERS = {
    "messages_fts_after_insert": """
        CREATE TRIGGER messages_fts_after_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
        END
    """,
    "messages_fts_after_delete": """
        CREATE TRIGGER messages_fts_after_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body)
            VALUES ('delete', old.rowid, old.body);
        END
    """,
    "messages_fts_after_update": """
        CREATE TRIGGER messages_fts_after_update AFTER UPDATE OF body ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, body)
            VALUES ('delete', old.rowid, old.body);
            INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
        END
    """,
}


def upgrade() -> None:
    _create_users()
    _create_threads()
    _create_messages()
    _create_attachments()
    _create_notifications()
    _create_sessions()
    _create_webhook_deliveries()

    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        _create_search_postgresql()
    elif dialect == "sqlite":
        _create_search_sqlite()


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for trigger in SQLITE_FTS_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    # Dropping a table drops its indexes, and on PostgreSQL the search column with it.
    for table in (
        "webhook_deliveries",
        "ended_clerk_sessions",
        "sessions",
        "notifications",
        "attachments",
        "reactions",
        "message_edits",
        "messages",
        "thread_events",
        "thread_participants",
        "threads",
        "users",
    ):
        op.drop_table(table)


def _create_users() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("clerk_id", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255), nullable=True),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("image_url", sa.String(2048), nullable=True),
        sa.Column("role", ROLE, nullable=False),
        sa.Column("preferences", JSON_DOCUMENT, nullable=False),
        sa.Column("clerk_updated_at", sa.BigInteger(), nullable=True),
        sa.Column("last_seen_at", UTC_DATETIME, nullable=True),
        sa.Column("deleted_at", UTC_DATETIME, nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("clerk_id", name="uq_users_clerk_id"),
    )
    op.create_index("ix_users_username", "users", ["username"])
    op.create_index("ix_users_display_name", "users", ["display_name"])


def _create_threads() -> None:
    op.create_table(
        "threads",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_direct", sa.Boolean(), nullable=False),
        sa.Column("direct_key", sa.String(80), nullable=True),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.Column("last_message_at", UTC_DATETIME, nullable=True),
        sa.Column("last_activity_at", UTC_DATETIME, nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("deleted_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_threads"),
        sa.UniqueConstraint("direct_key", name="uq_threads_direct_key"),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name="fk_threads_created_by_id_users",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_threads_last_activity_at", "threads", ["last_activity_at"])

    op.create_table(
        "thread_participants",
        sa.Column("thread_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", ROLE, nullable=False),
        sa.Column("joined_at", UTC_DATETIME, nullable=False),
        sa.Column("last_read_seq", sa.Integer(), nullable=False),
        sa.Column("last_delivered_seq", sa.Integer(), nullable=False),
        sa.Column("muted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("thread_id", "user_id", name="pk_thread_participants"),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name="fk_thread_participants_thread_id_threads",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_thread_participants_user_id_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_thread_participants_user_id_thread_id",
        "thread_participants",
        ["user_id", "thread_id"],
    )

    op.create_table(
        "thread_events",
        sa.Column("thread_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", JSON_DOCUMENT, nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("thread_id", "seq", name="pk_thread_events"),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name="fk_thread_events_thread_id_threads",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name="fk_thread_events_actor_id_users",
            ondelete="SET NULL",
        ),
    )


def _create_messages() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("thread_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=True),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("mention_ids", sa.JSON(), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("pinned_at", UTC_DATETIME, nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("edited_at", UTC_DATETIME, nullable=True),
        sa.Column("deleted_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("thread_id", "seq", name="uq_messages_thread_id_seq"),
        sa.UniqueConstraint(
            "thread_id",
            "author_id",
            "client_id",
            name="uq_messages_thread_id_author_id_client_id",
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name="fk_messages_thread_id_threads",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name="fk_messages_author_id_users",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["messages.id"],
            name="fk_messages_parent_id_messages",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_messages_parent_id", "messages", ["parent_id"])

    op.create_table(
        "message_edits",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("previous_body", sa.Text(), nullable=False),
        sa.Column("edited_by_id", sa.Uuid(), nullable=True),
        sa.Column("edited_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_message_edits"),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_message_edits_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["edited_by_id"],
            ["users.id"],
            name="fk_message_edits_edited_by_id_users",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_message_edits_message_id", "message_edits", ["message_id"])

    op.create_table(
        "reactions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("emoji", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reactions"),
        sa.UniqueConstraint(
            "message_id", "user_id", "emoji", name="uq_reactions_message_id_user_id_emoji"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_reactions_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_reactions_user_id_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_reactions_message_id_created_at", "reactions", ["message_id", "created_at"])


def _create_attachments() -> None:
    op.create_table(
        "attachments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("thread_id", sa.Uuid(), nullable=False),
        sa.Column("uploaded_by_id", sa.Uuid(), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("storage_key", sa.String(255), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_attachments"),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name="fk_attachments_thread_id_threads",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by_id"],
            ["users.id"],
            name="fk_attachments_uploaded_by_id_users",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_attachments_message_id_messages",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_attachments_message_id", "attachments", ["message_id"])
    op.create_index(
        "ix_attachments_message_id_created_at", "attachments", ["message_id", "created_at"]
    )


def _create_notifications() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("thread_id", sa.Uuid(), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("read_at", UTC_DATETIME, nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_notifications_user_id_users",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name="fk_notifications_actor_id_users",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name="fk_notifications_thread_id_threads",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_notifications_message_id_messages",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_notifications_user_id_created_at", "notifications", ["user_id", "created_at"]
    )
    op.create_index("ix_notifications_user_id_read_at", "notifications", ["user_id", "read_at"])


def _create_sessions() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("clerk_session_id", sa.String(255), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
        sa.Column("connected_at", UTC_DATETIME, nullable=False),
        sa.Column("last_seen_at", UTC_DATETIME, nullable=False),
        sa.Column("disconnected_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_sessions_user_id_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_sessions_clerk_session_id", "sessions", ["clerk_session_id"])
    op.create_index("ix_sessions_user_id_connected_at", "sessions", ["user_id", "connected_at"])

    op.create_table(
        "ended_clerk_sessions",
        sa.Column("clerk_session_id", sa.String(255), nullable=False),
        sa.Column("clerk_user_id", sa.String(255), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("ended_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("clerk_session_id", name="pk_ended_clerk_sessions"),
    )
    op.create_index("ix_ended_clerk_sessions_ended_at", "ended_clerk_sessions", ["ended_at"])


def _create_webhook_deliveries() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("svix_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("received_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("svix_id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"])


def _create_search_postgresql() -> None:
    op.add_column(
        "messages",
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('english', body)", persisted=True),
            nullable=True,
        ),
    )
    op.create_index(
        "ix_messages_search_vector", "messages", ["search_vector"], postgresql_using="gin"
    )


def _create_search_sqlite() -> None:
    op.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5("
        "body, content='messages', content_rowid='rowid', tokenize='porter unicode61')"
    )
    for create_trigger in SQLITE_FTS_TRIGGERS.values():
        op.execute(dedent(create_trigger).strip())
    # Empty now; keeps the revision correct if it ever runs over existing rows.
    op.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
