"""One open alert per group, whichever collector raises it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("uq_alerts_open_group", "alerts", ["group_key"], unique=True,
                    postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"))
