"""The alert queue: assignment, severity as a number, the queue's indexes, saved filters; the
installation's pseudonym secret and the pseudonyms of everyone existing alerts name.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import hashlib
import os
import time

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("alerts") as alerts:
        alerts.add_column(sa.Column("assignee", sa.String(128)))
        alerts.add_column(sa.Column("severity_rank", sa.SmallInteger, nullable=False, server_default="0"))
    op.execute("UPDATE alerts SET severity_rank = CASE severity WHEN 'low' THEN 1 WHEN 'medium' THEN 2 "
               "WHEN 'high' THEN 3 WHEN 'critical' THEN 4 ELSE 0 END")
    for name, columns in (("ix_alerts_status_id", ["status", "id"]), ("ix_alerts_user_id", ["user_name", "id"]),
                          ("ix_alerts_agent_id", ["agent_id", "id"]), ("ix_alerts_assignee_id", ["assignee", "id"]),
                          ("ix_alerts_created", ["created_at_ns"]), ("ix_alerts_severity_id", ["severity_rank", "id"]),
                          ("ix_alerts_evidence_id", ["evidence_count", "id"]),
                          ("ix_alerts_status_severity_id", ["status", "severity_rank", "id"]),
                          ("ix_alerts_status_evidence_id", ["status", "evidence_count", "id"])):
        op.create_index(name, "alerts", columns)
    op.create_index("ix_events_event_id", "events", ["event_id"])
    op.create_table(
        "saved_filters",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_saved_filters_owner_name"),
    )
    secret_table = op.create_table(
        "privacy_secret",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    )
    names = op.create_table(
        "pseudonyms",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("user_key", sa.String(64), nullable=False, unique=True),
        sa.Column("user_name", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    )
    # one secret for the installation: every collector on this database derives the same pseudonyms
    secret, now = os.urandom(32), time.time_ns()
    op.bulk_insert(secret_table, [{"id": 1, "secret": secret, "created_at_ns": now}])
    from collector.privacy.codes import code_for  # the one definition of a code (it may never change)

    rows, taken = [], set()
    for (user,) in op.get_bind().execute(sa.text("SELECT DISTINCT user_name FROM alerts WHERE user_name <> ''")):
        code = code_for(secret, user)
        code = code if code not in taken else code_for(secret, user, long=True)
        taken.add(code)
        rows.append({"code": code, "user_key": hashlib.sha256(user.encode("utf-8")).hexdigest(), "user_name": user,
                     "created_at_ns": now})
    if rows:
        op.bulk_insert(names, rows)
