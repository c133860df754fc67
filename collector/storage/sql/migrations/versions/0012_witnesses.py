"""Witnessed tree heads: the cosignatures witnesses gave on the collector's signed tree heads (issue 12).

One row per witness and tree size; collector/evidence/witnesses.py writes them, the case evidence
bundle carries them.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "witness_cosignatures",
        sa.Column("witness", sa.String(128), primary_key=True),
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("witness_key_id", sa.LargeBinary, nullable=False),
        sa.Column("root_hash", sa.LargeBinary, nullable=False),
        sa.Column("cosigned_at", sa.BigInteger, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("received_at_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_witness_cosignatures_size", "witness_cosignatures", ["tree_size"])


def downgrade() -> None:
    op.drop_index("ix_witness_cosignatures_size", "witness_cosignatures")
    op.drop_table("witness_cosignatures")
