"""Policies as versioned documents, their assignment by label, and what each agent applied (issue 11).

Reserved: filled by the work on that issue; until then it changes nothing.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
