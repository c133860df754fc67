"""Policies as versioned documents, their assignment by label, and what each agent applied (issue 11).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("author", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
    )
    op.create_table(
        "policy_assignments",
        sa.Column("label", sa.String(48), primary_key=True),
        sa.Column("policy_name", sa.String(64), nullable=False),
        sa.Column("priority", sa.BigInteger, nullable=False),
        sa.Column("assigned_by", sa.Text, nullable=False),
        sa.Column("assigned_at_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_policy_assignments_policy", "policy_assignments", ["policy_name"])
    op.create_table(
        "agent_policy_state",
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("updated_at_ns", sa.BigInteger, nullable=False),
        sa.Column("applied_name", sa.String(64)),
        sa.Column("applied_version", sa.BigInteger),
        sa.Column("applied_sha256", sa.String(64)),
        sa.Column("applied_source", sa.String(16)),
        sa.Column("applied_at_ns", sa.BigInteger),
        sa.Column("refused_name", sa.String(64)),
        sa.Column("refused_version", sa.BigInteger),
        sa.Column("refused_sha256", sa.String(64)),
        sa.Column("refused_reason", sa.Text),
        sa.Column("refused_at_ns", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("agent_policy_state")
    op.drop_index("ix_policy_assignments_policy", table_name="policy_assignments")
    op.drop_table("policy_assignments")
    op.drop_table("policy_versions")
