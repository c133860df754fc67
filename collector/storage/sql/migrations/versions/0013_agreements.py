"""Agreements on record: templates, signed copies with their evidence, acknowledgements and notices (issue 12).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agreement_templates",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "agreement_versions",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("template_id", sa.BigInteger, sa.ForeignKey("agreement_templates.id"), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("effective_from", sa.String(10), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("template_id", "version", name="uq_agreement_versions_template_version"),
    )
    op.create_table(
        "agreement_employees",
        sa.Column("employee_id", sa.String(64), primary_key=True),
        sa.Column("user_name", sa.Text),
        sa.Column("account", sa.String(128), unique=True),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_agreement_employees_user_name", "agreement_employees", ["user_name"])
    op.create_table(
        "agreement_records",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("employee_id", sa.String(64), sa.ForeignKey("agreement_employees.employee_id"), nullable=False),
        sa.Column("version_id", sa.BigInteger, sa.ForeignKey("agreement_versions.id"), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("evidence_ref", sa.Text, nullable=False),
        sa.Column("signed_at_ns", sa.BigInteger, nullable=False),
        sa.Column("identity_check", sa.Text, nullable=False),
        sa.Column("document_sha256", sa.String(64), nullable=False),
        sa.Column("document", sa.LargeBinary, nullable=False),
        sa.Column("recorded_by", sa.Text, nullable=False),
        sa.Column("recorded_at_ns", sa.BigInteger, nullable=False),
        sa.Column("valid", sa.Boolean, nullable=False),
        sa.Column("validation", sa.Text, nullable=False),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("tsr", sa.LargeBinary),
        sa.Column("sealed_at_ns", sa.BigInteger),
        sa.Column("seal_attempts", sa.Integer, nullable=False),
        sa.Column("seal_error", sa.Text, nullable=False),
        sa.Column("next_seal_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_agreement_records_employee_id", "agreement_records", ["employee_id"])
    op.create_index("ix_agreement_records_unsealed", "agreement_records", ["source", "sealed_at_ns", "next_seal_ns"])


def downgrade() -> None:
    op.drop_table("agreement_records")
    op.drop_table("agreement_employees")
    op.drop_table("agreement_versions")
    op.drop_table("agreement_templates")
