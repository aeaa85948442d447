"""Event bus: index processed_events by (consumer, processed_at) for pruning old idempotency records.

`core.consumer.prune_processed` deletes, per consumer group, the rows older than a cutoff
in chunks (oldest first). Without this index each chunk would scan the whole table, which
holds one row per event per group (millions after a few weeks). The primary key
(consumer, event_id) stays the only thing the consumer's hot path uses.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_processed_events_consumer_processed_at", "processed_events", ["consumer", "processed_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_events_consumer_processed_at", table_name="processed_events")
