"""Notifications: read positions over alerts and case changes, the outbox to WeCom group robots and email,
and each target's recent sends (its sliding window).

The alerts already stored are not news: the alerts position starts at the newest alert id, so an
upgrade does not send a flood of old alerts to the group chats.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    positions = op.create_table(
        "notify_positions",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("after_id", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "notify_outbox",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source_id", sa.BigInteger, nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=False),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
        sa.Column("next_attempt_ns", sa.BigInteger, nullable=False),
        sa.Column("sent_at_ns", sa.BigInteger),
        sa.Column("delivery_id", sa.BigInteger),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("target", "kind", "source_id", name="uq_notify_outbox_source"),
    )
    op.create_index("ix_notify_outbox_due", "notify_outbox", ["target", "status", "next_attempt_ns"])
    op.create_table(
        "notify_sends",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_notify_sends_target_at", "notify_sends", ["target", "at_ns"])
    bind = op.get_bind()
    newest = bind.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM alerts")).scalar_one()
    bind.execute(positions.insert().values(source="alerts", after_id=int(newest)))
