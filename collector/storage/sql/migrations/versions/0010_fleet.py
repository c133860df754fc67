"""Fleet: agent labels and health, multi-use enrollment tokens with labels (issue 11).

Reserved: filled by the work on that issue; until then it changes nothing.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
