"""The storage interface of the collector, by area, and its unit of work.

A ``Store`` hands out transactions; a ``Transaction`` is every area's interface at once, so one
request, ingest call or CLI command does all its reads and writes, audit rows included, in one
transaction that commits together or not at all::

    with store.transaction() as tx:     # commits on leaving, rolls back on an exception
        tx.revoke_agent(agent_id=..., now_ns=...)
        tx.append_audit(AuditEntry(...))

Services type their ``tx`` argument with the narrowest area they need. Backends: the in-memory
fake (collector/storage/memory.py) and SQL (collector/storage/sql/: SQLite, PostgreSQL); the
contract suite in tests/collector/storage runs against all three. Errors::

    StoreError
     ├── AlreadyExists     (a unique key is taken: user name, token, agent id)
     ├── ChainConflict     (another writer moved the agent's chain head between check and write)
     └── StoreUnavailable  (the database cannot be reached or written: retry later; nothing was written)
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from shoumi.batch import ChainHead

from collector.agreements.models import Employee as AgreementEmployee
from collector.agreements.models import SignedRecord
from collector.agreements.models import Template as AgreementTemplate
from collector.agreements.models import Version as AgreementVersion
from collector.alerts.models import Alert, AlertQuery, SavedFilter, Suppression, UserGroup
from collector.audit.models import AuditEntry, AuditFilter, AuditHead, AuditRow
from collector.cases.models import Attachment, Case, CaseChange, Comment, Handoff, HistoryEntry, HrRecord
from collector.domain.evidence import BatchRow, EventRow, SignedTreeHead, TreeLeaf
from collector.domain.records import Page
from collector.evidence.models import CertificateRecord, StoredCosignature
from collector.events.models import EventFilter, StoredBatch, StoredEvent
from collector.enrollment.models import EnrollToken
from collector.fleet.models import AgentHealth, AgentQuery, AgentRecord
from collector.notify.models import AlertFact, Notification
from collector.people.models import ThrottleState, User, UserToken
from collector.policy.models import AgentPolicyState, Assignment, PolicyVersion
from collector.retention.models import AuditAnchor, CaseHold, LegalHold, RetentionRun

__all__ = [
    "StoreError", "AlreadyExists", "ChainConflict", "StoreUnavailable",
    "EnrollmentArea", "AgentArea", "CertificateArea", "BatchArea", "EventArea", "AlertArea",
    "PeopleArea", "AuditArea", "TreeArea", "RetentionArea", "CaseArea", "NotifyArea", "PrivacyArea", "WitnessArea", "AgreementArea",
    "PolicyArea", "Transaction",
    "Store",
]


class StoreError(Exception):
    """Base of all storage errors."""


class AlreadyExists(StoreError):
    """A unique key is already taken."""


class ChainConflict(StoreError):
    """The chain head changed under the writer: the batch was not stored."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or written just now; the transaction was rolled back."""


class EnrollmentArea(Protocol):
    """Enrollment tokens."""

    def add_enroll_token(self, *, token_hash: str, created_at_ns: int, expires_at_ns: int, created_by: str,
                         max_uses: int = 1, labels: Sequence[str] = (), name: str = "") -> None: ...
    def consume_enroll_token(self, *, token_hash: str, agent: AgentRecord, now_ns: int) -> str | None:
        """Spends one use of a valid token (atomically: of two agents racing for the last use, one wins) and
        records the agent with the token's labels; returns None if it worked, else why not
        ('unknown', 'used' (every use spent), 'expired', 'revoked')."""
        ...
    def revoke_enroll_token(self, *, token_hash: str, now_ns: int) -> bool:
        """Revokes a token that still has uses left; returns whether it did."""
        ...
    def get_enroll_token(self, token_hash: str) -> EnrollToken | None: ...
    def list_enroll_tokens(self, *, limit: int = 500) -> Sequence[EnrollToken]:
        """Tokens, newest first (used, expired and revoked ones included)."""
        ...


class AgentArea(Protocol):
    """Enrolled agents."""

    def get_agent(self, agent_id: str) -> AgentRecord | None: ...
    def list_agents(self) -> Sequence[AgentRecord]: ...
    def update_agent_liveness(self, *, agent_id: str, liveness: str, last_seen_ns: int | None = None,
                              heartbeat_interval_s: float | None = None, only_from: str | None = None) -> bool:
        """Records an agent's liveness (only if it is ``only_from`` now, when given); returns whether it did."""
        ...
    def revoke_agent(self, *, agent_id: str, now_ns: int) -> bool: ...
    # --- fleet (collector/fleet): labels, health rows, the fleet page's query ---
    def set_agent_labels(self, *, agent_id: str, labels: Sequence[str]) -> bool:
        """Replaces an agent's labels (already checked and sorted); returns whether the agent exists."""
        ...
    def agent_ids_with_label(self, label: str) -> Sequence[str]:
        """The ids of every agent carrying the label, sorted."""
        ...
    def get_agent_health(self, agent_id: str) -> AgentHealth | None: ...
    def put_agent_health(self, health: AgentHealth) -> None:
        """Writes (inserts or replaces) an agent's health row."""
        ...
    def query_agents(self, q: AgentQuery, *, after: tuple[Any, str] | None, limit: int) -> Page:
        """FleetRows matching ``q`` in its order, after the cursor key (sort value, agent id);
        next_cursor is the JSON of the last row's key."""
        ...
    def count_agents_by_status(self) -> dict[str, int]:
        """How many agents have each fleet status (fleet.models.STATUSES)."""
        ...
    def agent_versions(self) -> Sequence[str]:
        """The distinct agent versions enrolled, sorted."""
        ...
    def open_agent_alerts(self, *, agent_ids: Sequence[str], rules: Sequence[str]) -> dict[str, tuple[tuple[str, int], ...]]:
        """Each agent's open alerts of these rules as (rule, alert id), newest first; agents without any absent."""
        ...
    def recent_agent_events(self, *, agent_id: str, kinds: Sequence[str], scan: int, limit: int) -> Sequence[StoredEvent]:
        """Of an agent's newest ``scan`` events (in chain order), those of these kinds, newest first, at most
        ``limit``: its heartbeat and gap history, at a bounded cost however busy the agent is."""
        ...


class CertificateArea(Protocol):
    """Client certificates the collector issued."""

    def add_certificate(self, *, serial: int, agent_id: str, not_before_ns: int, not_after_ns: int) -> None: ...
    def certificate_status(self, *, serial: int) -> tuple[str, bool] | None: ...
    def revoke_certificate(self, *, serial: int, now_ns: int) -> bool: ...
    def certificates_expiring(self, *, before_ns: int, now_ns: int, limit: int) -> Sequence[tuple[str, int]]:
        """(agent id, not after) of unrevoked agents whose newest unrevoked certificate is still valid at
        ``now_ns`` but ends before ``before_ns`` with less than a quarter of its lifetime left (agents renew at
        two thirds: a healthy one is never listed, whatever the lifetime), soonest first."""
        ...


class BatchArea(Protocol):
    """Agents' chains, stored batches and how far detection has run over each agent's stream."""

    def chain_head(self, agent_id: str) -> ChainHead | None: ...
    def batch_hash_at(self, *, agent_id: str, epoch: int, first_seq: int) -> bytes | None: ...
    def store_batch(self, batch: StoredBatch, events: Sequence[StoredEvent], *, expected_head: ChainHead | None) -> None:
        """Stores the batch and its events if the head is still ``expected_head``; else raises
        ChainConflict, after which the transaction is to be abandoned (rolled back) and retried."""
        ...
    def list_batches(self, *, agent_id: str | None = None) -> Sequence[StoredBatch]: ...
    def detected_upto(self, agent_id: str) -> tuple[int, int]: ...
    def mark_detected(self, *, agent_id: str, epoch: int, seq: int) -> None: ...
    def agents_behind_detection(self, *, limit: int) -> Sequence[str]:
        """Agents whose chain head is ahead of their detection position."""
        ...
    def claim_detection(self) -> bool:
        """Takes the detection lock for this transaction; False if another collector holds it."""
        ...
    def load_rule_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The stored states of these (rule, key) pairs; missing ones are absent."""
        ...
    def save_rule_states(self, states: dict[tuple[str, str], dict[str, Any]]) -> None:
        """Stores (replaces) these (rule, key) states."""
        ...
    def detection_lag(self) -> int:
        """Events stored but not yet run through detection, over all agents."""
        ...


class EventArea(Protocol):
    """Stored events."""

    def list_events(self, flt: EventFilter, *, cursor: int | None, limit: int) -> Page: ...
    def events_in_window(self, *, user: str, kind: str, since_ns: int, until_ns: int, cap: int) -> Sequence[StoredEvent]: ...
    def events_after(self, *, agent_id: str, epoch: int, seq: int, limit: int) -> Sequence[StoredEvent]:
        """One agent's events after (epoch, seq), in chain order."""
        ...
    def count_events(self) -> int: ...


class AlertArea(Protocol):
    """Alerts."""

    def add_alert(self, alert: Alert) -> Alert:
        """Stores a new alert; raises AlreadyExists if its group already has an open alert."""
        ...
    def update_alert(self, alert: Alert) -> None:
        """Overwrites an alert's fields; its evidence is only appended, by add_evidence."""
        ...
    def update_alerts(self, changed: Sequence[Alert]) -> None:
        """Writes the triage fields (status, outcome, assignee, update time) of many alerts at once (bulk)."""
        ...
    def add_evidence(self, *, alert_id: int, event_ids: Sequence[str]) -> int:
        """Appends the events an alert does not hold yet; returns how many were new."""
        ...
    def get_alert(self, alert_id: int) -> Alert | None: ...
    def latest_open_alert(self, *, rule: str, user: str | None = None, agent_id: str | None = None) -> Alert | None: ...
    def open_alert_in_group(self, group_key: str) -> Alert | None:
        """The open alert of a group, without its evidence loaded (``evidence_count`` says how much)."""
        ...
    def list_alerts(self, *, cursor: int | None, limit: int, status: str | None = None) -> Page: ...
    def count_alerts(self) -> dict[str, int]:
        """Alerts by rule."""
        ...
    def add_suppression(self, s: Suppression) -> Suppression: ...
    def list_suppressions(self, *, active_at_ns: int | None = None) -> Sequence[Suppression]: ...
    def count_suppressed(self, *, suppression_id: int, hits: int, at_ns: int) -> None: ...
    def lift_suppression(self, *, suppression_id: int, now_ns: int) -> bool: ...
    # --- the queue (collector/alerts): filtered, sorted and paged in the store, evidence not loaded ---
    def query_alerts(self, q: AlertQuery, *, after: tuple[int, int] | None, limit: int) -> Page:
        """Alerts matching ``q`` in its sort order, after the cursor key (sort key, id); next_cursor is "key_id"."""
        ...
    def count_alerts_by(self, q: AlertQuery, *, field: str) -> dict[str, int]:
        """How many alerts match ``q``, by "status", "rule" or "severity"."""
        ...
    def alert_ids_matching(self, q: AlertQuery, *, limit: int) -> Sequence[int]:
        """The ids of up to ``limit`` alerts matching ``q``, in its order."""
        ...
    def group_alerts_by_user(self, q: AlertQuery, *, offset: int, limit: int) -> Sequence[UserGroup]:
        """One row per user with their counts under ``q``, most alerts first."""
        ...
    def get_alerts(self, alert_ids: Sequence[int]) -> Sequence[Alert]:
        """These alerts, without their evidence, in id order (missing ids left out)."""
        ...
    def evidence_events(self, *, alert_id: int, after: tuple[int, int] | None, limit: int) -> Sequence[StoredEvent]:
        """An alert's stored evidence events in time order, after (time_ns, row_id)."""
        ...
    def count_stored_evidence(self, alert_id: int) -> int:
        """How many of an alert's evidence events are still stored (retention prunes old ones)."""
        ...
    def agent_events_between(self, *, agent_id: str, kinds: Sequence[str], since_ns: int, until_ns: int,
                             limit: int) -> Sequence[StoredEvent]:
        """An agent's events of these kinds in [since, until), oldest first: its health around an alert."""
        ...
    def alerts_of_agent(self, *, agent_id: str, rules: Sequence[str], since_ns: int, until_ns: int,
                        limit: int) -> Sequence[Alert]:
        """Alerts of these rules for an agent whose activity overlaps [since, until), oldest first."""
        ...
    def add_saved_filter(self, f: SavedFilter) -> SavedFilter:
        """Stores a named filter; raises AlreadyExists if its owner has one of that name."""
        ...
    def list_saved_filters(self, owner: str) -> Sequence[SavedFilter]: ...
    def delete_saved_filter(self, *, filter_id: int, owner: str) -> SavedFilter | None:
        """Deletes one of the owner's filters; returns it, or None if the owner has no such filter."""
        ...


class PeopleArea(Protocol):
    """Users, their tokens, login throttling and the keys people's service derives hashes from."""

    def add_user(self, user: User) -> None: ...
    def get_user(self, username: str) -> User | None: ...
    def list_users(self) -> Sequence[User]: ...
    def update_user(self, user: User) -> None:
        """Replaces the stored user of that name (role, password hash, disabled, lang)."""
        ...
    def add_token(self, *, token_hash: str, username: str, kind: str, created_at_ns: int, expires_at_ns: int | None,
                  name: str | None = None) -> None: ...
    def get_token(self, *, token_hash: str) -> UserToken | None: ...
    def user_for_token(self, *, token_hash: str, kind: str, now_ns: int) -> User | None: ...
    def touch_token(self, *, token_hash: str, now_ns: int) -> None: ...
    def list_tokens(self, *, username: str, kind: str) -> Sequence[UserToken]:
        """A user's tokens of one kind, newest first, revoked and expired ones included."""
        ...
    def revoke_token(self, *, token_hash: str) -> None: ...
    def revoke_user_tokens(self, *, username: str, kind: str | None = None, keep: str | None = None) -> int:
        """Revokes a user's tokens (of one kind, or all), except the one hashed ``keep``; returns how many."""
        ...
    def get_throttle(self, *, scope: str, key: str) -> ThrottleState | None:
        """The counted failures under a key, locked for this transaction (FOR UPDATE on PostgreSQL)."""
        ...
    def put_throttle(self, state: ThrottleState) -> None: ...
    def delete_throttle(self, *, scope: str, key: str) -> None: ...
    def get_service_key(self, *, name: str) -> bytes | None: ...
    def ensure_service_key(self, *, name: str, secret: bytes) -> bytes:
        """Stores ``secret`` under ``name`` unless a key is there already; returns the stored key."""
        ...


class AuditArea(Protocol):
    """The audit log: append-only and hash-chained (collector/audit/models.py)."""

    def append_audit(self, entry: AuditEntry) -> None:
        """Appends one entry after the chain's head, which it locks until the transaction ends."""
        ...
    def list_audit(self, *, cursor: int | None, limit: int, filter: AuditFilter | None = None,
                   oldest_first: bool = False) -> Page:
        """Entries matching the filter, newest first (ids below ``cursor``), or oldest first (ids above it)."""
        ...
    def audit_rows(self, *, after_id: int, limit: int) -> Sequence[AuditRow]:
        """Rows in id order after ``after_id``, every column as stored (for verify)."""
        ...
    def audit_head(self) -> AuditHead | None: ...


class TreeArea(Protocol):
    """Tamper evidence (collector/transparency.py writes, collector/verify.py reads)."""

    def add_tree_head(self, head: SignedTreeHead, leaves: Sequence[TreeLeaf], *, previous_size: int) -> None:
        """Appends leaves and their signed head; raises ChainConflict if the tree no longer has
        ``previous_size`` leaves or a leaf or batch is already in it."""
        ...
    def latest_tree_head(self) -> SignedTreeHead | None: ...
    def list_tree_heads(self) -> Sequence[SignedTreeHead]: ...
    def list_tree_leaves(self, *, start: int, limit: int) -> Sequence[TreeLeaf]: ...
    def batches_outside_tree(self, *, limit: int) -> Sequence[BatchRow]: ...
    def batch_leaves(self, *, after_row_id: int, limit: int) -> Sequence[BatchRow]: ...
    def event_rows(self, *, after_row_id: int, limit: int) -> Sequence[EventRow]: ...
    # verify's ordered, paged reads: one agent at a time in chain order, and light rows in row order
    def stored_agent_ids(self) -> Sequence[str]:
        """Every agent id a batches or events row names, sorted."""
        ...
    def chain_batches(self, *, agent_id: str, after: tuple[int, int, int] | None,
                      limit: int) -> Sequence[tuple[BatchRow, TreeLeaf | None]]:
        """One agent's batches rows after (epoch, first_seq, row_id) ``after`` (None: from the start) in
        that order, exactly as stored, each with the tree leaf that names its row (None if none does)."""
        ...
    def chain_event_rows(self, *, agent_id: str, after: tuple[int, int, int] | None, limit: int) -> Sequence[EventRow]:
        """One agent's events rows after (epoch, seq, row_id) ``after`` (None: from the start) in that
        order, every column as stored."""
        ...
    def batch_positions(self, *, after_row_id: int, limit: int) -> Sequence[tuple[int, str, int, int, int]]:
        """(row_id, agent_id, epoch, first_seq, last_seq) of batches rows after ``after_row_id``, in row order."""
        ...
    def event_positions(self, *, after_row_id: int, limit: int) -> Sequence[tuple[int, str, int, int]]:
        """(row_id, agent_id, epoch, seq) of events rows after ``after_row_id``, in row order."""
        ...
    def leaves_without_batch(self, *, after_index: int, limit: int) -> Sequence[TreeLeaf]:
        """Tree leaves with leaf_index > ``after_index`` whose batch row is not stored, in leaf order."""
        ...


class RetentionArea(Protocol):
    """Legal holds and the deletion of events past their retention."""

    def add_legal_hold(self, hold: LegalHold) -> LegalHold: ...
    def release_legal_hold(self, *, hold_id: int, now_ns: int) -> bool: ...
    def list_legal_holds(self, *, active_only: bool = True) -> Sequence[LegalHold]: ...
    def prune_batches(self, *, before_ns: int, now_ns: int, limit: int, after_row_id: int = 0,
                      held_cases: Sequence[int] = ()) -> RetentionRun:
        """Deletes the events (and blanks the signed bytes) of up to ``limit`` batches received
        before ``before_ns``, after row ``after_row_id``, that are already leaves of the Merkle tree
        and that no active hold covers (nor an event that is evidence of an alert of ``held_cases``);
        keeps each batch's hashes and signature. Records the run (kind events)."""
        ...
    def list_retention_runs(self) -> Sequence[RetentionRun]: ...
    # --- the other kinds (collector/retention/service.py): each records its run, with what it held and why ---
    def case_holds(self, *, payroll_since_ns: int) -> Sequence[CaseHold]:
        """Cases that keep their records: not closed or dismissed, or handed to payroll at or after ``payroll_since_ns``."""
        ...
    def prune_alerts(self, *, before_ns: int, now_ns: int, limit: int, after_id: int = 0) -> RetentionRun:
        """Deletes up to ``limit`` alerts (id above ``after_id``) last updated before ``before_ns`` that no case
        holds and no active hold covers, with their evidence lists; records the run."""
        ...
    def prune_cases(self, *, before_ns: int, payroll_since_ns: int, now_ns: int, limit: int,
                    after_id: int = 0) -> RetentionRun:
        """Deletes up to ``limit`` closed or dismissed cases last updated before ``before_ns`` (with their
        history, comments, attachments, HR records and hand-offs) unless handed to payroll at or after
        ``payroll_since_ns`` or covered by an active hold on their subject; records the run."""
        ...
    def prune_notifications(self, *, before_ns: int, now_ns: int, limit: int) -> RetentionRun:
        """Deletes up to ``limit`` sent or failed outbox rows created before ``before_ns``; records the run."""
        ...
    def prune_audit(self, *, before_ns: int, now_ns: int, held_why: Mapping[str, int]) -> RetentionRun:
        """Deletes the longest prefix of the audit log whose rows are all before ``before_ns`` and records
        an ``AuditAnchor`` at the cut (the last deleted row's id and hash); records the run."""
        ...
    def latest_audit_anchor(self) -> AuditAnchor | None:
        """The newest cut of the audit log (verify starts the chain there), or None."""
        ...


class CaseArea(Protocol):
    """Cases, their history, comments, attachments, HR's records and the payroll outbox (collector/cases)."""

    def add_case(self, case: Case) -> Case:
        """Stores a new case with its alerts; returns it with its id."""
        ...
    def get_case(self, case_id: int) -> Case | None: ...
    def update_case(self, case: Case, *, only_from: str | None = None) -> bool:
        """Overwrites a case's state, title, assignee and update time (its alerts stay), only while its state
        is still ``only_from`` when given (two people taking a step at once: one wins); returns whether it did."""
        ...
    def list_cases(self, *, cursor: int | None, limit: int, state: str | None = None,
                   assignee: str | None = None) -> Page:
        """Cases, newest first, after the cursor (a case id)."""
        ...
    def cases_for_alert(self, alert_id: int) -> Sequence[int]:
        """The ids of every case that holds the alert, oldest first."""
        ...
    def incident_first_ns(self, alert_ids: Sequence[int]) -> int | None:
        """When the earliest stored event among these alerts' evidence happened (None: no stored event)."""
        ...
    def add_case_history(self, entry: HistoryEntry) -> HistoryEntry: ...
    def case_history(self, case_id: int) -> Sequence[HistoryEntry]:
        """A case's history, oldest first."""
        ...
    def case_changes_after(self, *, after_id: int, limit: int) -> Sequence[CaseChange]:
        """State changes of every case (openings included) with a history id above ``after_id``, in id order."""
        ...
    def add_comment(self, comment: Comment) -> Comment: ...
    def list_comments(self, case_id: int) -> Sequence[Comment]:
        """A case's comments, oldest first."""
        ...
    def add_attachment(self, attachment: Attachment, content: bytes) -> Attachment:
        """Stores a file's record and its content (kept once per SHA-256); returns it with its id."""
        ...
    def list_attachments(self, case_id: int) -> Sequence[Attachment]: ...
    def get_attachment(self, attachment_id: int) -> Attachment | None: ...
    def attachment_content(self, sha256: str) -> bytes | None: ...
    def add_hr_record(self, record: HrRecord) -> HrRecord: ...
    def hr_records(self, case_id: int) -> Sequence[HrRecord]:
        """HR's records on a case, oldest first (the newest of a kind is in force)."""
        ...
    def add_handoff(self, handoff: Handoff) -> Handoff:
        """Writes an outbox row; raises AlreadyExists if the case already has that hand-off number."""
        ...
    def handoffs(self, case_id: int) -> Sequence[Handoff]:
        """A case's hand-offs, by number."""
        ...
    def claim_handoffs(self, *, now_ns: int, lease_ns: int, limit: int) -> Sequence[Handoff]:
        """Leases outbox rows with work due (a pending delivery, or an accepted one's schedule to read)
        that no worker holds, until ``now_ns + lease_ns``; a pending row's attempt is counted here."""
        ...
    def save_handoff(self, handoff: Handoff) -> None:
        """Records what happened to a hand-off (state, attempts, answer, schedule, next attempt, lease)."""
        ...


class NotifyArea(Protocol):
    """The notification outbox (collector/notify): read positions, outbox rows, each target's recent sends."""

    def alerts_after(self, *, after_id: int, limit: int) -> Sequence[AlertFact]:
        """Alerts with an id above ``after_id``, in id order, as (id, rule, severity) only; on PostgreSQL it
        first waits for alert inserts in flight, so an id that commits late is never passed over."""
        ...
    def case_history_settled(self) -> None:
        """Waits for case history rows in flight (PostgreSQL), so reading case changes by id skips none."""
        ...
    def notify_position(self, source: str) -> int:
        """The id up to which a source ('alerts', 'case_changes') was turned into notifications (0: none)."""
        ...
    def set_notify_position(self, *, source: str, after_id: int) -> None: ...
    def add_notifications(self, rows: Sequence[Notification]) -> int:
        """Adds outbox rows, skipping any whose (target, kind, source_id) is there already; returns how many."""
        ...
    def due_notifications(self, *, target: str, now_ns: int, limit: int) -> Sequence[Notification]:
        """A target's rows due by ``now_ns`` (pending, or sending with a lease that ran out), oldest first."""
        ...
    def claim_notifications(self, *, ids: Sequence[int], delivery_id: int, now_ns: int, lease_until_ns: int) -> int:
        """Marks these rows sending, leased until ``lease_until_ns``, one attempt more, if still due; how many."""
        ...
    def finish_notifications(self, *, ids: Sequence[int], status: str, now_ns: int, next_attempt_ns: int,
                             error: str | None) -> None:
        """Records a delivery's result on its rows: sent, pending again (from ``next_attempt_ns``) or failed."""
        ...
    def record_send(self, *, target: str, at_ns: int, keep_since_ns: int) -> None:
        """Records one message sent to a target; forgets its sends before ``keep_since_ns``."""
        ...
    def recent_sends(self, *, target: str, since_ns: int) -> Sequence[int]:
        """When messages went to a target since ``since_ns``, oldest first (its sliding window)."""
        ...
    def list_notifications(self, *, cursor: int | None, limit: int, status: str | None = None) -> Page:
        """Outbox rows, newest first, after the cursor (a row id)."""
        ...
    def count_notifications(self) -> dict[tuple[str, str], int]:
        """Outbox rows by (channel, status)."""
        ...
    def claim_notify(self) -> bool:
        """Takes the notification lock for this transaction; False if another collector holds it."""
        ...


@runtime_checkable
class PrivacyArea(Protocol):
    """The installation's pseudonym secret and the pseudonyms handed out (collector/privacy)."""

    def pseudonym_secret(self) -> bytes:
        """The installation's secret, made once with the schema: every collector on one database agrees."""
        ...
    def pseudonyms_for(self, user_names: Sequence[str]) -> dict[str, str]:
        """The recorded pseudonyms of these user names (unrecorded ones are absent)."""
        ...
    def user_for_pseudonym(self, code: str) -> str | None: ...
    def add_pseudonym(self, *, code: str, user_name: str, now_ns: int) -> bool:
        """Records a pseudonym; False (nothing written) if the code or the user name has one already."""
        ...


class WitnessArea(Protocol):
    """Witnesses' cosignatures on tree heads, and the reads of a case's evidence bundle (collector/evidence)."""

    def add_cosignature(self, c: StoredCosignature) -> bool:
        """Keeps a cosignature; False (nothing written) if that witness already cosigned that size."""
        ...
    def cosignatures(self, *, tree_sizes: Sequence[int] | None = None) -> Sequence[StoredCosignature]:
        """Cosignatures on these tree sizes (None: all), by size then witness."""
        ...
    def latest_cosignature(self, witness: str) -> StoredCosignature | None: ...
    def tree_head_at(self, tree_size: int) -> SignedTreeHead | None: ...
    def first_head_covering(self, leaf_index: int) -> SignedTreeHead | None:
        """The smallest signed head whose tree holds leaf ``leaf_index``."""
        ...
    def batch_of_event(self, *, agent_id: str, epoch: int, seq: int) -> tuple[BatchRow, TreeLeaf | None] | None:
        """The stored batch that carried the event, with its tree leaf (None if not a leaf yet)."""
        ...
    def agent_certificates(self, agent_id: str) -> Sequence[CertificateRecord]:
        """The client certificates issued to an agent, oldest first."""
        ...


class AgreementArea(Protocol):
    """Agreements on record (collector/agreements): templates, versions, employees, signed records."""

    def add_agreement_template(self, template: AgreementTemplate) -> AgreementTemplate: ...
    def list_agreement_templates(self) -> Sequence[AgreementTemplate]:
        """Every template, oldest first."""
        ...
    def get_agreement_template(self, template_id: int) -> AgreementTemplate | None: ...
    def add_agreement_version(self, version: AgreementVersion) -> AgreementVersion:
        """Stores a version; raises AlreadyExists if the template has a version of that name."""
        ...
    def list_agreement_versions(self, template_id: int) -> Sequence[AgreementVersion]:
        """A template's versions, oldest first."""
        ...
    def get_agreement_version(self, version_id: int) -> AgreementVersion | None: ...
    def put_agreement_employee(self, employee: AgreementEmployee) -> None:
        """Adds an employee or updates their user name and account; AlreadyExists if the account is another's."""
        ...
    def get_agreement_employee(self, employee_id: str) -> AgreementEmployee | None: ...
    def agreement_employee_for_account(self, account: str) -> AgreementEmployee | None: ...
    def agreement_employees_for_user(self, user_name: str) -> Sequence[AgreementEmployee]:
        """The employees whose events carry this user name, by payroll id."""
        ...
    def list_agreement_employees(self) -> Sequence[AgreementEmployee]:
        """Every employee, by payroll id."""
        ...
    def add_signed_record(self, record: SignedRecord, document: bytes) -> SignedRecord:
        """Stores a signed record with the exact bytes it is about (PDF, or acknowledgement JSON)."""
        ...
    def get_signed_record(self, record_id: int) -> SignedRecord | None: ...
    def signed_records(self, employee_id: str) -> Sequence[SignedRecord]:
        """An employee's signed records, oldest first."""
        ...
    def signed_document(self, record_id: int) -> bytes | None: ...
    def save_seal(self, *, record_id: int, tsr: bytes | None, sealed_at_ns: int | None, attempts: int, error: str,
                  next_seal_ns: int) -> bool:
        """Records a timestamping attempt on an acknowledgement not sealed yet; False (nothing written) if sealed."""
        ...
    def unsealed_records(self, *, now_ns: int, limit: int) -> Sequence[SignedRecord]:
        """Acknowledgements without a timestamp whose next attempt is due, oldest first."""
        ...


class PolicyArea(Protocol):
    """Policy documents and their versions, their assignment by label, what each agent reported (collector/policy)."""

    def add_policy_version(self, version: PolicyVersion) -> None:
        """Stores a new version; raises AlreadyExists if that policy has that version number already."""
        ...
    def get_policy_version(self, *, name: str, version: int | None = None) -> PolicyVersion | None:
        """One version of a policy, or its newest (``version`` None); None if there is none."""
        ...
    def list_policy_versions(self, name: str) -> Sequence[PolicyVersion]:
        """Every version of a policy, newest first."""
        ...
    def latest_policy_versions(self) -> Sequence[PolicyVersion]:
        """The newest version of every policy, by name."""
        ...
    def list_assignments(self) -> Sequence[Assignment]:
        """Every label's assignment, by label."""
        ...
    def put_assignment(self, assignment: Assignment) -> None:
        """Gives a label to a policy (taking it from any other)."""
        ...
    def delete_assignment(self, label: str) -> bool:
        """Takes a label's assignment away; returns whether it had one."""
        ...
    def get_agent_policy_state(self, agent_id: str) -> AgentPolicyState | None: ...
    def put_agent_policy_state(self, state: AgentPolicyState) -> None:
        """Records (replaces) what an agent reported of its policy."""
        ...
    def list_agent_policy_states(self) -> Sequence[AgentPolicyState]:
        """What every agent that reported reported, by agent id."""
        ...
    def policy_targets(self) -> Sequence[tuple[str, tuple[str, ...]]]:
        """(agent id, labels) of every unrevoked agent, by agent id: what delivery resolves policies for."""
        ...


class Transaction(EnrollmentArea, AgentArea, CertificateArea, BatchArea, EventArea, AlertArea, PeopleArea,
                  AuditArea, TreeArea, RetentionArea, CaseArea, NotifyArea, PrivacyArea, WitnessArea,
                  AgreementArea, PolicyArea, Protocol):
    """Every area at once, inside one transaction."""


class Store(Protocol):
    """A database: hands out transactions."""

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A read-write unit of work: commits on leaving, rolls back on an exception."""
        ...

    def read(self) -> AbstractContextManager[Transaction]:
        """A unit of work that only reads (takes no write lock)."""
        ...

    def health(self) -> str | None:
        """Returns None when the store can be read and written, else why not (no internals)."""
        ...

    def close(self) -> None: ...
