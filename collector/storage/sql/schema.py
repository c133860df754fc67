"""The SQL tables, one definition for SQLite and PostgreSQL; migrations (./migrations) build them.

The events table's per-event columns come from ``collector.events.models.EVENT_FIELDS``.
"""

from __future__ import annotations

import sqlalchemy as sa

from collector.events.models import EVENT_FIELDS

__all__ = ["metadata", "agents", "enroll_tokens", "certificates", "chain_heads", "batches", "events", "alerts",
           "users", "tokens", "audit_log", "tree_leaves", "tree_heads", "legal_holds", "retention_runs",
           "EVENT_COLUMNS"]

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
metadata = sa.MetaData()

schema_info = sa.Table("schema_info", metadata, sa.Column("version", sa.Integer, primary_key=True))
agents = sa.Table(
    "agents", metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("os", sa.Text, nullable=False),
    sa.Column("agent_version", sa.Text, nullable=False),
    sa.Column("enrolled_at_ns", sa.BigInteger, nullable=False),
    sa.Column("revoked_at_ns", sa.BigInteger),
    sa.Column("last_seen_ns", sa.BigInteger),
    sa.Column("heartbeat_interval_s", sa.Float),
    sa.Column("liveness", sa.String(16), nullable=False),
)
enroll_tokens = sa.Table(
    "enroll_tokens", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_at_ns", sa.BigInteger, nullable=False),
    sa.Column("used_at_ns", sa.BigInteger),
    sa.Column("used_by_agent", sa.String(64)),
    sa.Column("revoked_at_ns", sa.BigInteger),
)
certificates = sa.Table(
    "certificates", metadata,
    sa.Column("serial", sa.String(48), primary_key=True),
    sa.Column("agent_id", sa.String(64), nullable=False, index=True),
    sa.Column("not_before_ns", sa.BigInteger, nullable=False),
    sa.Column("not_after_ns", sa.BigInteger, nullable=False),
    sa.Column("revoked_at_ns", sa.BigInteger),
)
chain_heads = sa.Table(
    "chain_heads", metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.LargeBinary, nullable=False),
    # how far detection has run over this agent's stream (it runs after the commit that stores)
    sa.Column("detected_epoch", sa.BigInteger, nullable=False),
    sa.Column("detected_seq", sa.BigInteger, nullable=False),
)
batches = sa.Table(
    "batches", metadata,
    sa.Column("row_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("batch_hash", sa.LargeBinary, nullable=False),
    sa.Column("prev_hash", sa.LargeBinary, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
    sa.Column("canonical", sa.LargeBinary, nullable=False),
    sa.Column("received_at_ns", sa.BigInteger, nullable=False),
    # set when retention deleted the batch's events and blanked its canonical bytes
    sa.Column("pruned_at_ns", sa.BigInteger),
    sa.UniqueConstraint("agent_id", "epoch", "first_seq", name="uq_batches_agent_epoch_seq"),
)
sa.Index("ix_batches_received", batches.c.received_at_ns)

_SQL_TYPES = {int: sa.BigInteger, str: sa.Text, dict: sa.Text}
_LENGTHS = {"event_id": 64, "kind": 32}
EVENT_COLUMNS: tuple[str, ...] = tuple(f.column for f in EVENT_FIELDS)
events = sa.Table(
    "events", metadata,
    sa.Column("row_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    *(sa.Column(f.column, sa.String(_LENGTHS[f.column]) if f.column in _LENGTHS else _SQL_TYPES[f.type](), nullable=False)
      for f in EVENT_FIELDS),
    sa.UniqueConstraint("agent_id", "epoch", "seq", name="uq_events_agent_epoch_seq"),
)
sa.Index("ix_events_user_kind_time", events.c.user_name, events.c.kind, events.c.time_ns)
sa.Index("ix_events_kind", events.c.kind, events.c.row_id)
sa.Index("ix_events_time", events.c.time_ns)
alerts = sa.Table(
    "alerts", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
    sa.Column("occurrences", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("group_key", sa.String(200)),
    sa.Column("evidence_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("outcome", sa.String(32)),
)
# an alert's evidence, appended as it comes (a burst of thousands of reads never rewrites a list)
alert_evidence = sa.Table(
    "alert_evidence", metadata,
    sa.Column("alert_id", sa.BigInteger, primary_key=True),
    sa.Column("n", sa.BigInteger, primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.UniqueConstraint("alert_id", "event_id", name="uq_alert_evidence_event"),
)
suppressions = sa.Table(
    "suppressions", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
sa.Index("ix_alerts_rule_user", alerts.c.rule, alerts.c.user_name, alerts.c.status)
sa.Index("ix_alerts_group", alerts.c.group_key, alerts.c.status)
# one open alert per group, whichever collector raises it (raise_alert folds on a conflict)
sa.Index("uq_alerts_open_group", alerts.c.group_key, unique=True,
         postgresql_where=alerts.c.status == "open", sqlite_where=alerts.c.status == "open")
users = sa.Table(
    "users", metadata,
    sa.Column("username", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("password_hash", sa.Text),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),
)
tokens = sa.Table(
    "tokens", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(128), sa.ForeignKey("users.username"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_at_ns", sa.BigInteger),
    sa.Column("revoked", sa.Boolean, nullable=False),
)
audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
)
# Tamper evidence: which batch row became which Merkle leaf, and the signed heads over the leaves.
tree_leaves = sa.Table(
    "tree_leaves", metadata,
    sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("batch_row_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
)
tree_heads = sa.Table(
    "tree_heads", metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.LargeBinary, nullable=False),
    sa.Column("timestamp_ns", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.LargeBinary, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
)
# each detection rule's state per key (a user, an agent), as JSON: collector/detection/engine.py
detection_state = sa.Table(
    "detection_state", metadata,
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
)
legal_holds = sa.Table(
    "legal_holds", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("since_ns", sa.BigInteger, nullable=False),
    sa.Column("until_ns", sa.BigInteger, nullable=False),
    sa.Column("user_name", sa.Text),
    sa.Column("agent_id", sa.String(64)),
    sa.Column("released_at_ns", sa.BigInteger),
)
retention_runs = sa.Table(
    "retention_runs", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("before_ns", sa.BigInteger, nullable=False),
    sa.Column("batches", sa.BigInteger, nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("held_batches", sa.BigInteger, nullable=False),
)
