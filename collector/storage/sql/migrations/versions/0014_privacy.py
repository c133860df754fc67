"""Privacy by design: retention per kind of record, and anchors where retention cut the audit log (issue 12).

``retention_runs`` gains the kind of record, how many were deleted and held, and why (JSON). The new
``audit_anchors`` table records each cut of the audit log (the last deleted row's id and hash, the rows
up to it); it is append-only. The audit log stays append-only, except that rows at or below the newest
anchor's ``cut_id`` may be deleted: retention writes the anchor first, then deletes, in one transaction.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_REFUSAL = "audit_log is append-only"
_ANCHORS_REFUSAL = "audit_anchors is append-only"


def upgrade() -> None:
    with op.batch_alter_table("retention_runs") as t:
        t.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="events"))
        t.add_column(sa.Column("records", sa.BigInteger, nullable=False, server_default="0"))
        t.add_column(sa.Column("held", sa.BigInteger, nullable=False, server_default="0"))
        t.add_column(sa.Column("held_why", sa.Text, nullable=False, server_default="{}"))
    op.execute("UPDATE retention_runs SET records = batches, held = held_batches")
    op.create_index("ix_retention_runs_kind", "retention_runs", ["kind", "id"])
    op.create_table(
        "audit_anchors",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Column("cut_id", sa.BigInteger, nullable=False),
        sa.Column("cut_hash", sa.String(64), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("before_ns", sa.BigInteger, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_OP = 'DELETE' THEN "
            "IF OLD.id <= (SELECT COALESCE(MAX(cut_id), 0) FROM audit_anchors) THEN RETURN OLD; END IF; "
            f"END IF; RAISE EXCEPTION '{_REFUSAL}'; END $$")
        op.execute(f"CREATE FUNCTION audit_anchors_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN RAISE EXCEPTION '{_ANCHORS_REFUSAL}'; END $$")
        op.execute("CREATE TRIGGER audit_anchors_no_change BEFORE UPDATE OR DELETE ON audit_anchors "
                   "FOR EACH ROW EXECUTE FUNCTION audit_anchors_append_only()")
        op.execute("CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_anchors_append_only()")
    else:
        op.execute("DROP TRIGGER audit_log_no_delete")
        op.execute("CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
                   "WHEN OLD.id > (SELECT COALESCE(MAX(cut_id), 0) FROM audit_anchors) "
                   f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END")
        for what in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_anchors_no_{what.lower()} BEFORE {what} ON audit_anchors "
                       f"BEGIN SELECT RAISE(ABORT, '{_ANCHORS_REFUSAL}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_anchors_no_change ON audit_anchors")
        op.execute("DROP TRIGGER audit_anchors_no_truncate ON audit_anchors")
        op.execute("DROP FUNCTION audit_anchors_append_only()")
        op.execute(f"CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN RAISE EXCEPTION '{_REFUSAL}'; END $$")
    else:
        op.execute("DROP TRIGGER audit_log_no_delete")
        op.execute(f"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
                   f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END")
    op.drop_table("audit_anchors")
    op.drop_index("ix_retention_runs_kind", "retention_runs")
    with op.batch_alter_table("retention_runs") as t:
        for column in ("held_why", "held", "records", "kind"):
            t.drop_column(column)
