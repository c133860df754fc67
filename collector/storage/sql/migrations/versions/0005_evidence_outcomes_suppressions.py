"""Evidence appended per alert, outcomes on closing, suppressions with an owner and an expiry.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("alerts") as alerts:
        alerts.add_column(sa.Column("evidence_count", sa.BigInteger, nullable=False, server_default="0"))
        alerts.add_column(sa.Column("outcome", sa.String(32)))
    evidence = op.create_table(
        "alert_evidence",
        sa.Column("alert_id", sa.BigInteger, primary_key=True),
        sa.Column("n", sa.BigInteger, primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.UniqueConstraint("alert_id", "event_id", name="uq_alert_evidence_event"),
    )
    op.create_table(
        "suppressions",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
        sa.Column("expires_at_ns", sa.BigInteger, nullable=False),
        sa.Column("user_name", sa.Text),
        sa.Column("path_glob", sa.Text),
        sa.Column("hits", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_hit_ns", sa.BigInteger),
        sa.Column("lifted_at_ns", sa.BigInteger),
    )
    # what earlier alerts held as a JSON list becomes their appended evidence
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, event_ids FROM alerts")).all()
    for alert_id, text in rows:
        ids = list(dict.fromkeys(json.loads(text or "[]")))
        if ids:
            bind.execute(evidence.insert(), [dict(alert_id=alert_id, n=i, event_id=e) for i, e in enumerate(ids)])
        bind.execute(sa.text("UPDATE alerts SET evidence_count = :n, event_ids = '[]' WHERE id = :id"),
                     {"n": len(ids), "id": alert_id})
