"""Accounts: login throttling, token expiry and revocation, disabled users, language, the audit hash chain.

Rows already in the audit log are chained in id order as they stand; from here on the log is
append-only (triggers refuse UPDATE, DELETE and, on PostgreSQL, TRUNCATE).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_GENESIS = "0" * 64
_REFUSAL = "audit_log is append-only"


def _row_hash(prev: str, at_ns: int, actor: str, action: str, target: str, details_text: str) -> str:
    # collector.audit.models.audit_row_hash, frozen here as this revision knew it
    details = json.dumps(json.loads(details_text), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    payload = json.dumps([prev, at_ns, actor, action, target, details], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("lang", sa.String(8), nullable=False, server_default="zh"))
    with op.batch_alter_table("tokens") as tokens:
        tokens.add_column(sa.Column("name", sa.Text))
        tokens.add_column(sa.Column("last_used_ns", sa.BigInteger))
    op.create_index("ix_tokens_username", "tokens", ["username", "kind"])
    op.create_table(
        "login_throttle",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start_ns", sa.BigInteger, nullable=False),
        sa.Column("locked_until_ns", sa.BigInteger, nullable=False),
        sa.Column("lockouts", sa.Integer, nullable=False),
    )
    op.create_table(
        "service_keys",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("secret", sa.LargeBinary, nullable=False),
    )

    with op.batch_alter_table("audit_log") as audit:
        audit.add_column(sa.Column("prev_hash", sa.String(64)))
        audit.add_column(sa.Column("row_hash", sa.String(64)))
    prev, last_id, count = _GENESIS, 0, 0
    rows = bind.execute(sa.text("SELECT id, at_ns, actor, action, target, details FROM audit_log ORDER BY id")).all()
    for r in rows:
        row_hash = _row_hash(prev, r.at_ns, r.actor, r.action, r.target, r.details)
        bind.execute(sa.text("UPDATE audit_log SET prev_hash = :p, row_hash = :h WHERE id = :id"),
                     {"p": prev, "h": row_hash, "id": r.id})
        prev, last_id, count = row_hash, r.id, count + 1
    with op.batch_alter_table("audit_log") as audit:
        audit.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        audit.alter_column("row_hash", existing_type=sa.String(64), nullable=False)
    op.create_index("ix_audit_log_actor", "audit_log", ["actor", "id"])
    op.create_index("ix_audit_log_action", "audit_log", ["action", "id"])
    op.create_index("ix_audit_log_at_ns", "audit_log", ["at_ns"])
    op.create_index("ix_audit_log_target", "audit_log", ["target", "id"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_id", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    bind.execute(head.insert().values(id=1, last_id=last_id, last_hash=prev, count=count))

    if bind.dialect.name == "postgresql":
        op.execute(f"CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN RAISE EXCEPTION '{_REFUSAL}'; END $$")
        op.execute("CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
        op.execute("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()")
    else:
        for what in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_log_no_{what.lower()} BEFORE {what} ON audit_log "
                       f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END")
