"""Cases: history, comments, attachments, the documented loss, agreements, notices, the payroll outbox.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("subject_user", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
        sa.Column("updated_at_ns", sa.BigInteger, nullable=False),
        sa.Column("incident_first_ns", sa.BigInteger, nullable=False),
        sa.Column("assignee", sa.String(128)),
    )
    op.create_index("ix_cases_state", "cases", ["state", "id"])
    op.create_table(
        "case_alerts",
        sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("alert_id", sa.BigInteger, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )
    op.create_index("ix_case_alerts_alert", "case_alerts", ["alert_id"])
    op.create_table(
        "case_history",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32)),
        sa.Column("before", sa.Text, nullable=False),
        sa.Column("after", sa.Text, nullable=False),
    )
    op.create_index("ix_case_history_case", "case_history", ["case_id", "id"])
    op.create_table(
        "case_comments",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("author", sa.Text, nullable=False),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_case_comments_case_id", "case_comments", ["case_id"])
    op.create_table(
        "case_blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "case_attachments",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("case_blobs.sha256"), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("uploaded_by", sa.Text, nullable=False),
        sa.Column("uploaded_at_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_case_attachments_case_id", "case_attachments", ["case_id"])
    op.create_table(
        "case_hr_records",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("recorded_by", sa.Text, nullable=False),
        sa.Column("recorded_at_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_case_hr_records_case_id", "case_hr_records", ["case_id"])
    op.create_table(
        "payroll_outbox",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("sent_by", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_ns", sa.BigInteger, nullable=False),
        sa.Column("lease_until_ns", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("answered_at_ns", sa.BigInteger),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("schedule", sa.Text, nullable=False),
        sa.Column("schedule_at_ns", sa.BigInteger),
        sa.UniqueConstraint("case_id", "number", name="uq_payroll_outbox_case_number"),
    )
    op.create_index("ix_payroll_outbox_due", "payroll_outbox", ["state", "next_attempt_ns"])
