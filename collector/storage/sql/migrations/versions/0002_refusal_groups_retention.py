"""Alerts count their repeats; batches can be pruned by retention; legal holds and retention runs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("alerts") as alerts:
        alerts.add_column(sa.Column("occurrences", sa.BigInteger, nullable=False, server_default="1"))
        alerts.add_column(sa.Column("group_key", sa.String(200)))
        alerts.create_index("ix_alerts_group", ["group_key", "status"])
    with op.batch_alter_table("batches") as batches:
        batches.add_column(sa.Column("pruned_at_ns", sa.BigInteger))
        batches.create_index("ix_batches_received", ["received_at_ns"])
    op.create_table(
        "legal_holds",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
        sa.Column("since_ns", sa.BigInteger, nullable=False),
        sa.Column("until_ns", sa.BigInteger, nullable=False),
        sa.Column("user_name", sa.Text),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("released_at_ns", sa.BigInteger),
    )
    op.create_table(
        "retention_runs",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Column("before_ns", sa.BigInteger, nullable=False),
        sa.Column("batches", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("held_batches", sa.BigInteger, nullable=False),
    )
