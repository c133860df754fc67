"""The schema as the first release created it (before migrations existed).

A store created then holds a ``schema_info`` row with version 1 and no ``alembic_version``; it is
stamped with this revision and upgraded from here. The tables are written out as they were, not
imported, so that later changes to schema.py cannot change what this step builds.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
metadata = sa.MetaData()

schema_info = sa.Table(
    "schema_info", metadata, sa.Column("version", sa.Integer, primary_key=True)
)
agents = sa.Table(
    "agents",
    metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("os", sa.Text, nullable=False),
    sa.Column("agent_version", sa.Text, nullable=False),
    sa.Column("enrolled_at_ns", sa.BigInteger, nullable=False),
    sa.Column("revoked_at_ns", sa.BigInteger),
    sa.Column("last_seen_ns", sa.BigInteger),
    sa.Column("heartbeat_interval_s", sa.Float),
    sa.Column("liveness", sa.String(16), nullable=False, default="enrolled"),
)
enroll_tokens = sa.Table(
    "enroll_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_at_ns", sa.BigInteger, nullable=False),
    sa.Column("used_at_ns", sa.BigInteger),
    sa.Column("used_by_agent", sa.String(64)),
    sa.Column("revoked_at_ns", sa.BigInteger),
)
certificates = sa.Table(
    "certificates",
    metadata,
    sa.Column("serial", sa.String(48), primary_key=True),
    sa.Column("agent_id", sa.String(64), nullable=False, index=True),
    sa.Column("not_before_ns", sa.BigInteger, nullable=False),
    sa.Column("not_after_ns", sa.BigInteger, nullable=False),
    sa.Column("revoked_at_ns", sa.BigInteger),
)
chain_heads = sa.Table(
    "chain_heads",
    metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.LargeBinary, nullable=False),
    # how far detection has run over this agent's stream (it runs after the commit that stores)
    sa.Column("detected_epoch", sa.BigInteger, nullable=False, default=0),
    sa.Column("detected_seq", sa.BigInteger, nullable=False, default=0),
)
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("row_id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("batch_hash", sa.LargeBinary, nullable=False),
    sa.Column("prev_hash", sa.LargeBinary, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
    sa.Column("canonical", sa.LargeBinary, nullable=False),
    sa.Column("received_at_ns", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("agent_id", "epoch", "first_seq", name="uq_batches_agent_epoch_seq"),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("row_id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("time_ns", sa.BigInteger, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("dest_path", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("user_name", sa.Text, nullable=False),
    sa.Column("uid", sa.BigInteger, nullable=False),
    sa.Column("pid", sa.BigInteger, nullable=False),
    sa.Column("process", sa.Text, nullable=False),
    sa.Column("exe", sa.Text, nullable=False),
    sa.Column("attributes", sa.Text, nullable=False),
    sa.UniqueConstraint("agent_id", "epoch", "seq", name="uq_events_agent_epoch_seq"),
)
sa.Index("ix_events_user_kind_time", events.c.user_name, events.c.kind, events.c.time_ns)
sa.Index("ix_events_kind", events.c.kind, events.c.row_id)
sa.Index("ix_events_time", events.c.time_ns)
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("user_name", sa.Text, nullable=False),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("updated_at_ns", sa.BigInteger, nullable=False),
    sa.Column("event_ids", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("last_event_ns", sa.BigInteger, nullable=False),
)
sa.Index("ix_alerts_rule_user", alerts.c.rule, alerts.c.user_name, alerts.c.status)
users = sa.Table(
    "users",
    metadata,
    sa.Column("username", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("password_hash", sa.Text),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
)
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(128), sa.ForeignKey("users.username"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_at_ns", sa.BigInteger),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
)

# Tamper evidence (collector/transparency.py, collector/verify.py): which batch row became which
# Merkle leaf, and the signed tree heads over those leaves. Written only by the tree-head signer.
tree_leaves = sa.Table(
    "tree_leaves",
    metadata,
    sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("batch_row_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
)
tree_heads = sa.Table(
    "tree_heads",
    metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.LargeBinary, nullable=False),
    sa.Column("timestamp_ns", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.LargeBinary, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
)


def upgrade() -> None:
    metadata.create_all(op.get_bind())
    op.get_bind().execute(schema_info.insert().values(version=1))
