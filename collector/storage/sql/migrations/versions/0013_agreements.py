"""Agreements on record: templates, signed copies with their evidence, acknowledgements and notices (issue 12).

Reserved: filled by the work on that issue; until then it changes nothing.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
