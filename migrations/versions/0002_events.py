"""Event bus: wake the relay with NOTIFY when outbox rows commit; index outbox.relayed_at.

A statement-level trigger (not NOTIFY inside `core.events.emit`) so that every insert
into the outbox wakes the relay, including bulk inserts that bypass `emit`. PostgreSQL
delivers a notification only when the inserting transaction commits and folds identical
notifications of one transaction into one, so a transaction that emits 1,000 events
sends one wake-up and a rolled-back one sends none. The relay still polls as a fallback
(a notification is lost if no listener is connected at commit time).

The index on (relayed_at, id) serves the relay's checks for stream entries Redis lost
("any row relayed after the newest entry?"), replays in relayed order and the pruning of
old relayed rows; unrelayed rows stay out of it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_relayed_at", "outbox", ["relayed_at", "id"], unique=False,
        postgresql_where="relayed_at IS NOT NULL",
    )
    op.execute("""
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('serena_outbox', '');
            RETURN NULL;
        END $$;
    """)
    op.execute("""
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    op.drop_index("ix_outbox_relayed_at", table_name="outbox", postgresql_where="relayed_at IS NOT NULL")
