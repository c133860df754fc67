"""The SQL tables, one definition for SQLite and PostgreSQL; migrations (./migrations) build them.

The events table's per-event columns come from ``collector.events.models.EVENT_FIELDS``.
"""

from __future__ import annotations

import sqlalchemy as sa

from collector.events.models import EVENT_FIELDS

__all__ = ["metadata", "agents", "agent_labels", "agent_health", "enroll_tokens", "certificates", "chain_heads", "batches", "events", "alerts",
           "users", "sso_pending", "tokens", "audit_log", "audit_head", "login_throttle", "service_keys", "saved_filters", "privacy_secret", "pseudonyms", "tree_leaves", "tree_heads", "legal_holds", "retention_runs", "audit_anchors",
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
    # fleet (0010): the agent's labels as one sorted, comma-joined text (read with the agent in one row);
    # agent_labels holds the same, one row each, for the queries by label
    sa.Column("labels", sa.Text, nullable=False, server_default=""),
)
agent_labels = sa.Table(
    "agent_labels", metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("label", sa.String(48), primary_key=True),
    sa.Index("ix_agent_labels_label", "label", "agent_id"),
)
sa.Index("ix_agents_hostname", agents.c.hostname, agents.c.agent_id)
sa.Index("ix_agents_last_seen", agents.c.last_seen_ns, agents.c.agent_id)
agent_health = sa.Table(  # fleet (0010): the latest heartbeat's figures, one row per agent, written on ingest
    "agent_health", metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("updated_at_ns", sa.BigInteger, nullable=False),
    sa.Column("heartbeat_ns", sa.BigInteger),
    sa.Column("reported_version", sa.Text, nullable=False),
    sa.Column("spool_unacked_events", sa.BigInteger, nullable=False),
    sa.Column("spool_bytes", sa.BigInteger, nullable=False),
    sa.Column("spool_refused_pending", sa.BigInteger, nullable=False),
    sa.Column("refused_total", sa.BigInteger, nullable=False),
    sa.Column("capture_gaps", sa.BigInteger, nullable=False),
    sa.Column("clock_skew_ms", sa.BigInteger, nullable=False),
    sa.Column("users", sa.Text, nullable=False),  # JSON list, newest first
)
enroll_tokens = sa.Table(
    "enroll_tokens", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_at_ns", sa.BigInteger, nullable=False),
    sa.Column("used_at_ns", sa.BigInteger),  # the latest use
    sa.Column("used_by_agent", sa.String(64)),  # the latest agent
    sa.Column("revoked_at_ns", sa.BigInteger),
    # fleet (0010): multi-use tokens with labels and a name
    sa.Column("max_uses", sa.Integer, nullable=False, server_default="1"),
    sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
    sa.Column("labels", sa.Text, nullable=False, server_default=""),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
)
certificates = sa.Table(
    "certificates", metadata,
    sa.Column("serial", sa.String(48), primary_key=True),
    sa.Column("agent_id", sa.String(64), nullable=False, index=True),
    sa.Column("not_before_ns", sa.BigInteger, nullable=False),
    sa.Column("not_after_ns", sa.BigInteger, nullable=False),
    sa.Column("revoked_at_ns", sa.BigInteger),
)
sa.Index("ix_certificates_not_after", certificates.c.not_after_ns)  # fleet (0010): the ones about to expire
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
    # the queue (0008): who is on it, and the severity as a number to sort by
    sa.Column("assignee", sa.String(128)),
    sa.Column("severity_rank", sa.SmallInteger, nullable=False, server_default="0"),
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
# the queue's filters and sort orders (0008): each ends with the id, the cursor's tie-break
sa.Index("ix_alerts_status_id", alerts.c.status, alerts.c.id)
sa.Index("ix_alerts_user_id", alerts.c.user_name, alerts.c.id)
sa.Index("ix_alerts_agent_id", alerts.c.agent_id, alerts.c.id)
sa.Index("ix_alerts_assignee_id", alerts.c.assignee, alerts.c.id)
sa.Index("ix_alerts_created", alerts.c.created_at_ns)
sa.Index("ix_alerts_severity_id", alerts.c.severity_rank, alerts.c.id)
sa.Index("ix_alerts_evidence_id", alerts.c.evidence_count, alerts.c.id)
# the queue's usual view, open alerts most severe (or with most evidence) first, read in index order
sa.Index("ix_alerts_status_severity_id", alerts.c.status, alerts.c.severity_rank, alerts.c.id)
sa.Index("ix_alerts_status_evidence_id", alerts.c.status, alerts.c.evidence_count, alerts.c.id)
# an alert's evidence events are found by their id (0008): the detail page's timeline
sa.Index("ix_events_event_id", events.c.event_id)
saved_filters = sa.Table(
    "saved_filters", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("query", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("owner", "name", name="uq_saved_filters_owner_name"),
)
# collector/privacy: one secret per installation (made by migration 0008), and each pseudonym handed out
privacy_secret = sa.Table(
    "privacy_secret", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
)
pseudonyms = sa.Table(
    "pseudonyms", metadata,
    sa.Column("code", sa.String(32), primary_key=True),
    # SHA-256 of the name, unique: a name of any length gets one row (a B-tree entry has a size limit)
    sa.Column("user_key", sa.String(64), nullable=False, unique=True),
    sa.Column("user_name", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
)
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
    sa.Column("lang", sa.String(8), nullable=False, server_default="zh"),
    sa.Column("provider", sa.String(16)),  # 0015: signed in through a provider (collector/people/sso)
    sa.Column("subject", sa.String(255)),  # the provider's stable id of the person
)
sa.Index("uq_users_provider_subject", users.c.provider, users.c.subject, unique=True)
# provider sign-ins started and not yet come back (0015): the state's hash, used once
sso_pending = sa.Table(
    "sso_pending", metadata,
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("nonce", sa.Text, nullable=False),
    sa.Column("verifier", sa.Text, nullable=False),
    sa.Column("next_path", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
)
tokens = sa.Table(
    "tokens", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(128), sa.ForeignKey("users.username"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_at_ns", sa.BigInteger),
    sa.Column("revoked", sa.Boolean, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("last_used_ns", sa.BigInteger),
)
sa.Index("ix_tokens_username", tokens.c.username, tokens.c.kind)
# failed sign-ins per (scope, key): collector/people/throttle.py; keys are keyed hashes, never typed text
login_throttle = sa.Table(
    "login_throttle", metadata,
    sa.Column("scope", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("window_start_ns", sa.BigInteger, nullable=False),
    sa.Column("locked_until_ns", sa.BigInteger, nullable=False),
    sa.Column("lockouts", sa.Integer, nullable=False),
)
# keys the collectors on one database share (the keyed hash of unknown user names, throttle keys)
service_keys = sa.Table(
    "service_keys", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("secret", sa.LargeBinary, nullable=False),
)
# Append-only and hash-chained (collector/audit/models.py); triggers refuse UPDATE and DELETE (migration 0006).
audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
)
sa.Index("ix_audit_log_actor", audit_log.c.actor, audit_log.c.id)
sa.Index("ix_audit_log_action", audit_log.c.action, audit_log.c.id)
sa.Index("ix_audit_log_at_ns", audit_log.c.at_ns)
sa.Index("ix_audit_log_target", audit_log.c.target, audit_log.c.id)
# the chain's end, one row (id 1): appending locks it (FOR UPDATE), so collectors never fork the chain
audit_head = sa.Table(
    "audit_head", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
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
# witnesses' cosignatures on signed tree heads (0012): collector/evidence/witnesses.py
witness_cosignatures = sa.Table(
    "witness_cosignatures", metadata,
    sa.Column("witness", sa.String(128), primary_key=True),
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("witness_key_id", sa.LargeBinary, nullable=False),
    sa.Column("root_hash", sa.LargeBinary, nullable=False),
    sa.Column("cosigned_at", sa.BigInteger, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
    sa.Column("received_at_ns", sa.BigInteger, nullable=False),
    sa.Index("ix_witness_cosignatures_size", "tree_size"),
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
    # 0014: every kind of record (events, alerts, cases, audit, notifications), what was held and why (JSON)
    sa.Column("kind", sa.String(16), nullable=False, server_default="events"),
    sa.Column("records", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("held", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("held_why", sa.Text, nullable=False, server_default="{}"),
)
sa.Index("ix_retention_runs_kind", retention_runs.c.kind, retention_runs.c.id)
# where retention cut the audit log (0014): rows up to cut_id are deleted, verify starts from cut_hash;
# append-only (triggers), and audit_log's delete trigger lets only rows up to the newest cut go
audit_anchors = sa.Table(
    "audit_anchors", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("cut_id", sa.BigInteger, nullable=False),
    sa.Column("cut_hash", sa.String(64), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("before_ns", sa.BigInteger, nullable=False),
)
# --- cases (collector/cases): cases, their alerts, history, comments, attachments, HR's records, the payroll outbox
cases = sa.Table(
    "cases", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("subject_user", sa.Text, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("updated_at_ns", sa.BigInteger, nullable=False),
    sa.Column("incident_first_ns", sa.BigInteger, nullable=False),
    sa.Column("assignee", sa.String(128)),
)
sa.Index("ix_cases_state", cases.c.state, cases.c.id)
case_alerts = sa.Table(
    "case_alerts", metadata,
    sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), primary_key=True),
    sa.Column("alert_id", sa.BigInteger, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)
sa.Index("ix_case_alerts_alert", case_alerts.c.alert_id)
case_history = sa.Table(
    "case_history", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), nullable=False),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("from_state", sa.String(32)),
    sa.Column("to_state", sa.String(32)),
    sa.Column("before", sa.Text, nullable=False),
    sa.Column("after", sa.Text, nullable=False),
)
sa.Index("ix_case_history_case", case_history.c.case_id, case_history.c.id)
case_comments = sa.Table(
    "case_comments", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("author", sa.Text, nullable=False),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)
# a file's content, once per SHA-256 (its records below name it); never stored under an uploaded name
case_blobs = sa.Table(
    "case_blobs", metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("content", sa.LargeBinary, nullable=False),
)
case_attachments = sa.Table(
    "case_attachments", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), sa.ForeignKey("case_blobs.sha256"), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("content_type", sa.String(128), nullable=False),
    sa.Column("uploaded_by", sa.Text, nullable=False),
    sa.Column("uploaded_at_ns", sa.BigInteger, nullable=False),
)
case_hr_records = sa.Table(
    "case_hr_records", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.BigInteger, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("recorded_by", sa.Text, nullable=False),
    sa.Column("recorded_at_ns", sa.BigInteger, nullable=False),
)
# the payroll outbox: one row per hand-off, its payload frozen when the case was sent
payroll_outbox = sa.Table(
    "payroll_outbox", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
sa.Index("ix_payroll_outbox_due", payroll_outbox.c.state, payroll_outbox.c.next_attempt_ns)
# --- notifications (collector/notify): read positions, the outbox, each target's recent sends ---------------
notify_positions = sa.Table(
    "notify_positions", metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("after_id", sa.BigInteger, nullable=False),
)
notify_outbox = sa.Table(
    "notify_outbox", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("source_id", sa.BigInteger, nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("from_state", sa.String(32), nullable=False),
    sa.Column("to_state", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("next_attempt_ns", sa.BigInteger, nullable=False),
    sa.Column("sent_at_ns", sa.BigInteger),
    sa.Column("delivery_id", sa.BigInteger),
    sa.Column("last_error", sa.Text),
    sa.UniqueConstraint("target", "kind", "source_id", name="uq_notify_outbox_source"),
)
sa.Index("ix_notify_outbox_due", notify_outbox.c.target, notify_outbox.c.status, notify_outbox.c.next_attempt_ns)
notify_sends = sa.Table(
    "notify_sends", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
)
sa.Index("ix_notify_sends_target_at", notify_sends.c.target, notify_sends.c.at_ns)
# --- agreements on record (collector/agreements): templates, versions, employees, signed records ----------
agreement_templates = sa.Table(
    "agreement_templates", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
)
agreement_versions = sa.Table(
    "agreement_versions", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("template_id", sa.BigInteger, sa.ForeignKey("agreement_templates.id"), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("effective_from", sa.String(10), nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("template_id", "version", name="uq_agreement_versions_template_version"),
)
agreement_employees = sa.Table(
    "agreement_employees", metadata,
    sa.Column("employee_id", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.Text, index=True),
    sa.Column("account", sa.String(128), unique=True),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
)
agreement_records = sa.Table(
    "agreement_records", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("employee_id", sa.String(64), sa.ForeignKey("agreement_employees.employee_id"), nullable=False,
              index=True),
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
sa.Index("ix_agreement_records_unsealed", agreement_records.c.source, agreement_records.c.sealed_at_ns,
         agreement_records.c.next_seal_ns)
# --- policies (collector/policy, migration 0011): versions, assignments by label, what each agent reported ---
policy_versions = sa.Table(
    "policy_versions", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("author", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
)
policy_assignments = sa.Table(
    "policy_assignments", metadata,
    sa.Column("label", sa.String(48), primary_key=True),
    sa.Column("policy_name", sa.String(64), nullable=False),
    sa.Column("priority", sa.BigInteger, nullable=False),
    sa.Column("assigned_by", sa.Text, nullable=False),
    sa.Column("assigned_at_ns", sa.BigInteger, nullable=False),
)
sa.Index("ix_policy_assignments_policy", policy_assignments.c.policy_name)
agent_policy_state = sa.Table(
    "agent_policy_state", metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("updated_at_ns", sa.BigInteger, nullable=False),
    sa.Column("applied_name", sa.String(64)),
    sa.Column("applied_version", sa.BigInteger),
    sa.Column("applied_sha256", sa.String(64)),
    sa.Column("applied_source", sa.String(16)),
    sa.Column("applied_at_ns", sa.BigInteger),
    sa.Column("refused_name", sa.String(64)),
    sa.Column("refused_version", sa.BigInteger),
    sa.Column("refused_sha256", sa.String(64)),
    sa.Column("refused_reason", sa.Text),
    sa.Column("refused_at_ns", sa.BigInteger),
)
# notices to employees through WeCom (0016, collector/wecom): userids of employees/accounts, notices and their proof
wecom_userids = sa.Table(
    "wecom_userids", metadata,
    sa.Column("subject", sa.String(200), primary_key=True),  # employee:<payroll id> | account:<name>
    sa.Column("userid", sa.String(64), nullable=False),
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Column("updated_at_ns", sa.BigInteger, nullable=False),
)
employee_notices = sa.Table(
    "employee_notices", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("employee_id", sa.String(64), nullable=False, index=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("text_sha256", sa.String(64), nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("case_id", sa.String(64), index=True),
    sa.Column("bridge_notice_id", sa.String(128)),
    sa.Column("channel", sa.String(8)),
    sa.Column("address", sa.Text),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("msgid", sa.String(128), index=True),
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
sa.Index("ix_employee_notices_due", employee_notices.c.state, employee_notices.c.next_attempt_ns)
