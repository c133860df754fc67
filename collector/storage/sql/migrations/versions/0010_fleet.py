"""Fleet: agent labels and health, multi-use enrollment tokens with labels (issue 11).

Agents get their labels (a sorted, comma-joined text on the agents row, and one agent_labels row
each for the queries by label) and a health row written on ingest when a heartbeat arrives;
certificates an index on their end, for the periodic look for those about to expire.
Enrollment tokens get a use count (max_uses, 1 for every token made before: they stay one-time;
uses is 1 for those already used), the labels enrolled agents receive, and a name.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("labels", sa.Text, nullable=False, server_default=""))
    op.create_index("ix_agents_hostname", "agents", ["hostname", "agent_id"])
    op.create_index("ix_agents_last_seen", "agents", ["last_seen_ns", "agent_id"])
    op.create_index("ix_certificates_not_after", "certificates", ["not_after_ns"])
    op.create_table(
        "agent_labels",
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("label", sa.String(48), primary_key=True),
    )
    op.create_index("ix_agent_labels_label", "agent_labels", ["label", "agent_id"])
    op.create_table(
        "agent_health",
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("updated_at_ns", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_ns", sa.BigInteger),
        sa.Column("reported_version", sa.Text, nullable=False),
        sa.Column("spool_unacked_events", sa.BigInteger, nullable=False),
        sa.Column("spool_bytes", sa.BigInteger, nullable=False),
        sa.Column("spool_refused_pending", sa.BigInteger, nullable=False),
        sa.Column("refused_total", sa.BigInteger, nullable=False),
        sa.Column("capture_gaps", sa.BigInteger, nullable=False),
        sa.Column("clock_skew_ms", sa.BigInteger, nullable=False),
        sa.Column("users", sa.Text, nullable=False),
    )
    with op.batch_alter_table("enroll_tokens") as batch:
        batch.add_column(sa.Column("max_uses", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("uses", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("labels", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("name", sa.Text, nullable=False, server_default=""))
    op.execute("UPDATE enroll_tokens SET uses = 1 WHERE used_at_ns IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("enroll_tokens") as batch:
        for column in ("name", "labels", "uses", "max_uses"):
            batch.drop_column(column)
    op.drop_table("agent_health")
    op.drop_index("ix_agent_labels_label", table_name="agent_labels")
    op.drop_table("agent_labels")
    op.drop_index("ix_certificates_not_after", table_name="certificates")
    op.drop_index("ix_agents_last_seen", table_name="agents")
    op.drop_index("ix_agents_hostname", table_name="agents")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("labels")
