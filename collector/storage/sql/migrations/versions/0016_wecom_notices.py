"""Notices to employees through WeCom (issue 16): WeCom userids, notices with their proof of service.

``wecom_userids`` maps an employee (``employee:<payroll id>``) or a collector account
(``account:<name>``) to a WeCom userid; ``employee_notices`` holds each notice sent to an employee
(deduction or monitoring), its channel, the delivery result, the read receipt, the acknowledgement and
whether the payroll bridge took the proof (collector/wecom).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wecom_userids",
        sa.Column("subject", sa.String(200), primary_key=True),
        sa.Column("userid", sa.String(64), nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
        sa.Column("updated_at_ns", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "employee_notices",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("employee_id", sa.String(64), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("text_sha256", sa.String(64), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
        sa.Column("case_id", sa.String(64)),
        sa.Column("bridge_notice_id", sa.String(128)),
        sa.Column("channel", sa.String(8)),
        sa.Column("address", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("msgid", sa.String(128)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_ns", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at_ns", sa.BigInteger),
        sa.Column("opened_at_ns", sa.BigInteger),
        sa.Column("read_at_ns", sa.BigInteger),
        sa.Column("acknowledged_at_ns", sa.BigInteger),
        sa.Column("acknowledged_by", sa.Text),
        sa.Column("proof_reported_at_ns", sa.BigInteger),
        sa.Column("proof_answer", sa.Text),
    )
    op.create_index("ix_employee_notices_employee_id", "employee_notices", ["employee_id"])
    op.create_index("ix_employee_notices_case_id", "employee_notices", ["case_id"])
    op.create_index("ix_employee_notices_msgid", "employee_notices", ["msgid"])
    op.create_index("ix_employee_notices_due", "employee_notices", ["state", "next_attempt_ns"])


def downgrade() -> None:
    op.drop_table("employee_notices")
    op.drop_table("wecom_userids")
