"""The in-memory store: the fake that services are unit-tested against.

It passes the same contract suite as SQLite and PostgreSQL (tests/collector/storage). One
transaction runs at a time (a lock, as SQLite's BEGIN IMMEDIATE); it works on a copy of the state
that replaces the state only when the transaction ends without an exception.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping, Sequence

from shoumi.batch import ChainHead

from collector.agreements.models import Employee as AgreementEmployee
from collector.agreements.models import SignedRecord
from collector.agreements.models import Template as AgreementTemplate
from collector.agreements.models import Version as AgreementVersion
from collector.alerts.models import SEVERITY_RANK, Alert, AlertQuery, SavedFilter, Suppression, UserGroup
from collector.audit.models import GENESIS, AuditEntry, AuditFilter, AuditHead, AuditRow, audit_row_hash, canonical_details
from collector.cases.models import Attachment, Case, CaseChange, Comment, Handoff, HistoryEntry, HrRecord
from collector.domain.evidence import BatchRow, EventRow, SignedTreeHead, TreeLeaf
from collector.domain.records import Page
from collector.events.models import EventFilter, StoredBatch, StoredEvent
from collector.evidence.models import CertificateRecord, StoredCosignature
from collector.enrollment.models import EnrollToken, token_state
from collector.fleet.models import STATUSES, AgentHealth, AgentQuery, AgentRecord, FleetRow, status_of
from collector.notify.models import AlertFact, Notification
from collector.people.models import SsoPending, ThrottleState, User, UserToken
from collector.retention.models import AuditAnchor, CaseHold, LegalHold, RetentionRun, covers, covers_span
from collector.storage.base import AlreadyExists, ChainConflict
from collector.storage.memory_policies import MemoryPolicies
from collector.storage.memory_wecom import MemoryWeCom

__all__ = ["MemoryStore", "MemoryTransaction"]

_CASE_DONE = ("closed", "dismissed")  # a case in any other state holds its records (retention)




@dataclass
class _State:
    tokens: dict[str, EnrollToken] = field(default_factory=dict)
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    agent_health: dict[str, AgentHealth] = field(default_factory=dict)
    certificates: dict[int, tuple[str, bool]] = field(default_factory=dict)
    certificate_ends: dict[int, int] = field(default_factory=dict)  # serial -> not after
    certificate_starts: dict[int, int] = field(default_factory=dict)  # serial -> not before
    heads: dict[str, ChainHead] = field(default_factory=dict)
    detected: dict[str, tuple[int, int]] = field(default_factory=dict)
    batches: dict[int, StoredBatch] = field(default_factory=dict)  # row_id -> batch
    batch_at: dict[tuple[str, int, int], int] = field(default_factory=dict)
    pruned: dict[int, int] = field(default_factory=dict)  # batch row -> when retention pruned it
    events: dict[int, StoredEvent] = field(default_factory=dict)  # row_id -> event
    event_at: set[tuple[str, int, int]] = field(default_factory=set)
    alerts: dict[int, Alert] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    user_tokens: dict[str, UserToken] = field(default_factory=dict)
    throttle: dict[tuple[str, str], ThrottleState] = field(default_factory=dict)
    service_keys: dict[str, bytes] = field(default_factory=dict)
    sso_pending: dict[str, SsoPending] = field(default_factory=dict)  # state hash -> pending sign-in
    audit: list[AuditEntry] = field(default_factory=list)
    leaves: list[TreeLeaf] = field(default_factory=list)
    heads_signed: list[SignedTreeHead] = field(default_factory=list)
    holds: dict[int, LegalHold] = field(default_factory=dict)
    runs: list[RetentionRun] = field(default_factory=list)
    audit_anchors: list[AuditAnchor] = field(default_factory=list)
    rule_states: dict[tuple[str, str], str] = field(default_factory=dict)
    evidence: dict[int, list[str]] = field(default_factory=dict)
    suppressions: dict[int, Suppression] = field(default_factory=dict)
    saved_filters: dict[int, SavedFilter] = field(default_factory=dict)
    # privacy (collector/privacy): the installation's secret, code -> user name
    pseudonym_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    pseudonyms: dict[str, str] = field(default_factory=dict)
    # cases (collector/cases)
    cases: dict[int, Case] = field(default_factory=dict)
    case_history: list[HistoryEntry] = field(default_factory=list)
    case_comments: list[Comment] = field(default_factory=list)
    case_attachments: dict[int, Attachment] = field(default_factory=dict)
    case_blobs: dict[str, bytes] = field(default_factory=dict)
    hr_records: list[HrRecord] = field(default_factory=list)
    handoffs: dict[int, Handoff] = field(default_factory=dict)
    # notifications (collector/notify)
    notify_positions: dict[str, int] = field(default_factory=dict)
    notifications: dict[int, Notification] = field(default_factory=dict)
    notify_sends: dict[str, list[int]] = field(default_factory=dict)
    # witnesses' cosignatures (collector/evidence): (witness, tree size) -> cosignature
    cosignatures: dict[tuple[str, int], StoredCosignature] = field(default_factory=dict)
    # agreements (collector/agreements)
    agreement_templates: dict[int, AgreementTemplate] = field(default_factory=dict)
    agreement_versions: dict[int, AgreementVersion] = field(default_factory=dict)
    agreement_employees: dict[str, AgreementEmployee] = field(default_factory=dict)
    agreement_records: dict[int, SignedRecord] = field(default_factory=dict)
    agreement_documents: dict[int, bytes] = field(default_factory=dict)
    # policies (collector/policy): (name, version) -> version, label -> assignment, agent id -> its report
    policy_versions: dict[tuple[str, int], Any] = field(default_factory=dict)
    policy_assignments: dict[str, Any] = field(default_factory=dict)
    agent_policy: dict[str, Any] = field(default_factory=dict)
    # WeCom (collector/wecom): subject -> (userid, by, at), key -> notice to an employee
    wecom_userids: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    employee_notices: dict[str, Any] = field(default_factory=dict)
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


class _AgreementsMemory:
    """The agreements area (collector/agreements) over the state."""

    s: _State

    def add_agreement_template(self, template: AgreementTemplate) -> AgreementTemplate:
        """Stores a template."""
        stored = replace(template, id=self.s.new_id())
        self.s.agreement_templates[stored.id or 0] = stored
        return stored

    def list_agreement_templates(self) -> Sequence[AgreementTemplate]:
        """Every template, oldest first."""
        return [t for _, t in sorted(self.s.agreement_templates.items())]

    def get_agreement_template(self, template_id: int) -> AgreementTemplate | None:
        """A template by id."""
        return self.s.agreement_templates.get(template_id)

    def add_agreement_version(self, version: AgreementVersion) -> AgreementVersion:
        """Stores a version; AlreadyExists if the template has one of that name."""
        if any(v.template_id == version.template_id and v.version == version.version
               for v in self.s.agreement_versions.values()):
            raise AlreadyExists(f"template {version.template_id} already has a version {version.version!r}")
        stored = replace(version, id=self.s.new_id())
        self.s.agreement_versions[stored.id or 0] = stored
        return stored

    def list_agreement_versions(self, template_id: int) -> Sequence[AgreementVersion]:
        """A template's versions, oldest first."""
        return [v for _, v in sorted(self.s.agreement_versions.items()) if v.template_id == template_id]

    def get_agreement_version(self, version_id: int) -> AgreementVersion | None:
        """A version by id."""
        return self.s.agreement_versions.get(version_id)

    def put_agreement_employee(self, employee: AgreementEmployee) -> None:
        """Adds an employee or updates their user name and account."""
        if employee.account is not None and any(
                e.account == employee.account and e.employee_id != employee.employee_id
                for e in self.s.agreement_employees.values()):
            raise AlreadyExists(f"the account {employee.account!r} belongs to another employee")
        old = self.s.agreement_employees.get(employee.employee_id)
        self.s.agreement_employees[employee.employee_id] = (
            employee if old is None else replace(old, user_name=employee.user_name, account=employee.account))

    def get_agreement_employee(self, employee_id: str) -> AgreementEmployee | None:
        """An employee by payroll id."""
        return self.s.agreement_employees.get(employee_id)

    def agreement_employee_for_account(self, account: str) -> AgreementEmployee | None:
        """The employee a collector account is linked to."""
        return next((e for e in self.s.agreement_employees.values() if e.account == account), None)

    def agreement_employees_for_user(self, user_name: str) -> Sequence[AgreementEmployee]:
        """The employees whose events carry this user name."""
        return [e for _, e in sorted(self.s.agreement_employees.items()) if e.user_name == user_name]

    def list_agreement_employees(self) -> Sequence[AgreementEmployee]:
        """Every employee, by payroll id."""
        return [e for _, e in sorted(self.s.agreement_employees.items())]

    def add_signed_record(self, record: SignedRecord, document: bytes) -> SignedRecord:
        """Stores a signed record with its document."""
        stored = replace(record, id=self.s.new_id(), validation=copy.deepcopy(dict(record.validation)))
        self.s.agreement_records[stored.id or 0] = stored
        self.s.agreement_documents[stored.id or 0] = bytes(document)
        return stored

    def get_signed_record(self, record_id: int) -> SignedRecord | None:
        """A signed record by id."""
        return self.s.agreement_records.get(record_id)

    def signed_records(self, employee_id: str) -> Sequence[SignedRecord]:
        """An employee's signed records, oldest first."""
        return [r for _, r in sorted(self.s.agreement_records.items()) if r.employee_id == employee_id]

    def signed_document(self, record_id: int) -> bytes | None:
        """The exact bytes a record is about."""
        return self.s.agreement_documents.get(record_id)

    def save_seal(self, *, record_id: int, tsr: bytes | None, sealed_at_ns: int | None, attempts: int, error: str,
                  next_seal_ns: int) -> bool:
        """Records a timestamping attempt on an acknowledgement not sealed yet."""
        old = self.s.agreement_records.get(record_id)
        if old is None or old.tsr is not None:
            return False
        self.s.agreement_records[record_id] = replace(old, tsr=tsr, sealed_at_ns=sealed_at_ns, seal_attempts=attempts,
                                                      seal_error=error, next_seal_ns=next_seal_ns)
        return True

    def unsealed_records(self, *, now_ns: int, limit: int) -> Sequence[SignedRecord]:
        """Acknowledgements not yet timestamped whose next attempt is due, oldest first."""
        return [r for _, r in sorted(self.s.agreement_records.items())
                if r.source == "acknowledgement" and r.tsr is None and r.next_seal_ns <= now_ns][:limit]


class MemoryTransaction(_AgreementsMemory, MemoryPolicies, MemoryWeCom):
    """Every area over one copy of the state."""

    def __init__(self, state: _State) -> None:
        self.s = state

    # --- enrollment, agents, certificates ------------------------------------------------------
    def add_enroll_token(self, *, token_hash: str, created_at_ns: int, expires_at_ns: int, created_by: str,
                         max_uses: int = 1, labels: Sequence[str] = (), name: str = "") -> None:
        """Records a new enrollment token."""
        if token_hash in self.s.tokens:
            raise AlreadyExists("token exists")
        self.s.tokens[token_hash] = EnrollToken(token_hash, created_by, created_at_ns, expires_at_ns, max_uses, 0,
                                                tuple(labels), name)

    def consume_enroll_token(self, *, token_hash: str, agent: AgentRecord, now_ns: int) -> str | None:
        """Spends one use of a token and records the agent with its labels; returns why not, or None."""
        t = self.s.tokens.get(token_hash)
        if t is None:
            return "unknown"
        state = token_state(t, now_ns=now_ns)
        if state != "active":
            return state
        if agent.agent_id in self.s.agents:
            raise AlreadyExists(f"agent {agent.agent_id} exists")
        self.s.tokens[token_hash] = replace(t, uses=t.uses + 1, used_at_ns=now_ns)
        self.s.agents[agent.agent_id] = replace(agent, labels=t.labels)
        return None

    def revoke_enroll_token(self, *, token_hash: str, now_ns: int) -> bool:
        """Revokes a token with uses left."""
        t = self.s.tokens.get(token_hash)
        if t is None or t.uses >= t.max_uses or t.revoked_at_ns is not None:
            return False
        self.s.tokens[token_hash] = replace(t, revoked_at_ns=now_ns)
        return True

    def get_enroll_token(self, token_hash: str) -> EnrollToken | None:
        """One token's record."""
        return self.s.tokens.get(token_hash)

    def list_enroll_tokens(self, *, limit: int = 500) -> Sequence[EnrollToken]:
        """Tokens, newest first."""
        return sorted(self.s.tokens.values(), key=lambda t: (-t.created_at_ns, t.token_hash))[:limit]

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        """Gets an agent by its id."""
        return self.s.agents.get(agent_id)

    def list_agents(self) -> Sequence[AgentRecord]:
        """Lists all enrolled agents."""
        return sorted(self.s.agents.values(), key=lambda a: (a.enrolled_at_ns, a.agent_id))

    def update_agent_liveness(self, *, agent_id: str, liveness: str, last_seen_ns: int | None = None,
                              heartbeat_interval_s: float | None = None, only_from: str | None = None) -> bool:
        """Records an agent's liveness."""
        a = self.s.agents.get(agent_id)
        if a is None or (only_from is not None and a.liveness != only_from):
            return False
        self.s.agents[agent_id] = replace(
            a, liveness=liveness, last_seen_ns=a.last_seen_ns if last_seen_ns is None else last_seen_ns,
            heartbeat_interval_s=a.heartbeat_interval_s if heartbeat_interval_s is None else heartbeat_interval_s)
        return True

    def revoke_agent(self, *, agent_id: str, now_ns: int) -> bool:
        """Marks an agent revoked."""
        a = self.s.agents.get(agent_id)
        if a is None or a.revoked_at_ns is not None:
            return False
        self.s.agents[agent_id] = replace(a, revoked_at_ns=now_ns)
        return True

    # --- fleet: labels, health rows, the fleet page's query ---
    def set_agent_labels(self, *, agent_id: str, labels: Sequence[str]) -> bool:
        """Replaces an agent's labels."""
        a = self.s.agents.get(agent_id)
        if a is None:
            return False
        self.s.agents[agent_id] = replace(a, labels=tuple(labels))
        return True

    def agent_ids_with_label(self, label: str) -> Sequence[str]:
        """The ids of every agent carrying the label, sorted."""
        return sorted(a.agent_id for a in self.s.agents.values() if label in a.labels)

    def get_agent_health(self, agent_id: str) -> AgentHealth | None:
        """An agent's health row."""
        return self.s.agent_health.get(agent_id)

    def put_agent_health(self, health: AgentHealth) -> None:
        """Inserts or replaces an agent's health row."""
        self.s.agent_health[health.agent_id] = health

    def query_agents(self, q: AgentQuery, *, after: tuple[Any, str] | None, limit: int) -> Page:
        """The fleet page: filtered, sorted by the key and the agent id, one page."""
        def key(a: AgentRecord) -> Any:
            return {"hostname": a.hostname, "last_seen": a.last_seen_ns or 0, "version": a.agent_version,
                    "status": status_of(a), "enrolled": a.enrolled_at_ns}[q.sort]

        def matches(a: AgentRecord) -> bool:
            text = (q.text or "").lower()
            return ((q.status is None or status_of(a) == q.status) and (not q.label or q.label in a.labels)
                    and (not q.version or a.agent_version == q.version)
                    and (not q.os or q.os.lower() in a.os.lower())
                    and (not text or text in a.hostname.lower() or text in a.agent_id.lower()))

        found = sorted(((key(a), a.agent_id, a) for a in self.s.agents.values() if matches(a)),
                       key=lambda t: (t[0], t[1]), reverse=q.descending)
        if after is not None:
            found = [t for t in found if ((t[0], t[1]) < tuple(after) if q.descending else (t[0], t[1]) > tuple(after))]
        page = found[:limit]
        rows = tuple(FleetRow(a, self.s.agent_health.get(a.agent_id), self._newest_certificate(a.agent_id))
                     for _, _, a in page)
        nxt = json.dumps([page[-1][0], page[-1][1]]) if len(found) > limit else None
        return Page(rows, nxt)

    def _newest_certificate(self, agent_id: str) -> int | None:
        ends = [self.s.certificate_ends[serial] for serial, (owner, revoked) in self.s.certificates.items()
                if owner == agent_id and not revoked and serial in self.s.certificate_ends]
        return max(ends) if ends else None

    def count_agents_by_status(self) -> dict[str, int]:
        """Agents by fleet status."""
        counts = dict.fromkeys(STATUSES, 0)
        for a in self.s.agents.values():
            counts[status_of(a)] += 1
        return counts

    def agent_versions(self) -> Sequence[str]:
        """The distinct agent versions, sorted."""
        return sorted({a.agent_version for a in self.s.agents.values()})

    def open_agent_alerts(self, *, agent_ids: Sequence[str], rules: Sequence[str]) -> dict[str, tuple[tuple[str, int], ...]]:
        """Each agent's open alerts of these rules as (rule, id), newest first."""
        out: dict[str, list[tuple[str, int]]] = {}
        wanted = set(agent_ids)
        for alert_id in sorted(self.s.alerts, reverse=True):
            a = self.s.alerts[alert_id]
            if a.agent_id in wanted and a.rule in rules and a.status == "open":
                out.setdefault(a.agent_id, []).append((a.rule, alert_id))
        return {k: tuple(v) for k, v in sorted(out.items())}

    def recent_agent_events(self, *, agent_id: str, kinds: Sequence[str], scan: int, limit: int) -> Sequence[StoredEvent]:
        """Of the agent's newest ``scan`` events, those of these kinds, newest first."""
        newest = sorted((e for e in self.s.events.values() if e.agent_id == agent_id),
                        key=lambda e: (e.epoch, e.seq), reverse=True)[:scan]
        return [e for e in newest if e.kind in kinds][:limit]

    def add_certificate(self, *, serial: int, agent_id: str, not_before_ns: int, not_after_ns: int) -> None:
        """Records a certificate."""
        if serial in self.s.certificates:
            raise AlreadyExists("certificate exists")
        self.s.certificates[serial] = (agent_id, False)
        self.s.certificate_ends[serial] = not_after_ns
        self.s.certificate_starts[serial] = not_before_ns

    def certificates_expiring(self, *, before_ns: int, now_ns: int, limit: int) -> Sequence[tuple[str, int]]:
        """Unrevoked agents whose newest unrevoked certificate ends in (now, before) with less than a quarter of
        its lifetime left, soonest first."""
        found = []
        for agent in self.s.agents.values():
            end = self._newest_certificate(agent.agent_id)
            if agent.revoked_at_ns is None and end is not None and now_ns < end < before_ns:
                start = min(self.s.certificate_starts.get(serial, end) for serial, (owner, revoked)
                            in self.s.certificates.items()
                            if owner == agent.agent_id and not revoked and self.s.certificate_ends.get(serial) == end)
                if 4 * (end - now_ns) < end - start:
                    found.append((end, agent.agent_id))
        return [(agent_id, end) for end, agent_id in sorted(found)[:limit]]

    def certificate_status(self, *, serial: int) -> tuple[str, bool] | None:
        """Returns (agent id, revoked), or None."""
        return self.s.certificates.get(serial)

    def revoke_certificate(self, *, serial: int, now_ns: int) -> bool:
        """Revokes one certificate."""
        found = self.s.certificates.get(serial)
        if found is None or found[1]:
            return False
        self.s.certificates[serial] = (found[0], True)
        return True

    # --- batches and detection positions --------------------------------------------------------
    def chain_head(self, agent_id: str) -> ChainHead | None:
        """Gets where the agent's chain stands."""
        return self.s.heads.get(agent_id)

    def batch_hash_at(self, *, agent_id: str, epoch: int, first_seq: int) -> bytes | None:
        """Gets the hash of the batch stored at that position."""
        row = self.s.batch_at.get((agent_id, epoch, first_seq))
        return None if row is None else self.s.batches[row].batch_hash

    def store_batch(self, batch: StoredBatch, events: Sequence[StoredEvent], *, expected_head: ChainHead | None) -> None:
        """Stores a batch and its events if the head has not moved."""
        if self.s.heads.get(batch.agent_id) != expected_head:
            raise ChainConflict(f"chain head of {batch.agent_id} moved")
        key = (batch.agent_id, batch.epoch, batch.first_seq)
        if key in self.s.batch_at or any((e.agent_id, e.epoch, e.seq) in self.s.event_at for e in events):
            raise ChainConflict(f"batch of {batch.agent_id} already stored")
        self.s.heads[batch.agent_id] = ChainHead(batch.epoch, batch.last_seq, batch.batch_hash)
        self.s.detected.setdefault(batch.agent_id, (0, 0))
        row = self.s.new_id()
        self.s.batches[row] = batch
        self.s.batch_at[key] = row
        for e in events:
            rid = self.s.new_id()
            self.s.events[rid] = e._replace(row_id=rid)
            self.s.event_at.add((e.agent_id, e.epoch, e.seq))

    def list_batches(self, *, agent_id: str | None = None) -> Sequence[StoredBatch]:
        """Lists stored batches in ingest order."""
        return [b for _, b in sorted(self.s.batches.items()) if agent_id is None or b.agent_id == agent_id]

    def detected_upto(self, agent_id: str) -> tuple[int, int]:
        """Returns (epoch, seq) up to which detection has run."""
        return self.s.detected.get(agent_id, (0, 0))

    def mark_detected(self, *, agent_id: str, epoch: int, seq: int) -> None:
        """Records the detection position; never moves backwards."""
        if agent_id in self.s.heads and self.s.detected.get(agent_id, (0, 0)) < (epoch, seq):
            self.s.detected[agent_id] = (epoch, seq)

    def agents_behind_detection(self, *, limit: int) -> Sequence[str]:
        """Agents whose chain head is ahead of their detection position."""
        behind = [a for a, h in self.s.heads.items() if (h.epoch, h.last_seq) > self.s.detected.get(a, (0, 0))]
        return sorted(behind)[:limit]

    def claim_detection(self) -> bool:
        """One transaction at a time: always free."""
        return True

    def load_rule_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The stored states of these (rule, key) pairs."""
        return {k: json.loads(self.s.rule_states[k]) for k in keys if k in self.s.rule_states}

    def save_rule_states(self, states: dict[tuple[str, str], dict[str, Any]]) -> None:
        """Stores (replaces) these (rule, key) states, as JSON (so what is stored is what SQL would keep)."""
        for k, state in states.items():
            self.s.rule_states[k] = json.dumps(state)

    def detection_lag(self) -> int:
        """Events stored but not yet run through detection."""
        lag = 0
        for a, h in self.s.heads.items():
            epoch, seq = self.s.detected.get(a, (0, 0))
            lag += h.last_seq - seq if epoch == h.epoch else h.last_seq
        return lag

    # --- events -------------------------------------------------------------------------------
    def list_events(self, flt: EventFilter, *, cursor: int | None, limit: int) -> Page:
        """Lists events in ingest order after the cursor, matching the filter."""
        out = []
        for rid, e in sorted(self.s.events.items()):
            if cursor is not None and rid <= cursor:
                continue
            if ((flt.agent_id is not None and e.agent_id != flt.agent_id) or (flt.kind is not None and e.kind != flt.kind)
                    or (flt.user is not None and e.user != flt.user)
                    or (flt.since_ns is not None and e.time_ns < flt.since_ns)
                    or (flt.until_ns is not None and e.time_ns >= flt.until_ns)):
                continue
            out.append(e)
            if len(out) > limit:
                break
        items = tuple(out[:limit])
        return Page(items, str(items[-1].row_id) if len(out) > limit and items else None)

    def events_in_window(self, *, user: str, kind: str, since_ns: int, until_ns: int, cap: int) -> Sequence[StoredEvent]:
        """Lists one user's events of a kind in a time range, oldest first."""
        found = [e for e in self.s.events.values() if e.user == user and e.kind == kind and since_ns <= e.time_ns <= until_ns]
        return sorted(found, key=lambda e: (e.time_ns, e.row_id or 0))[:cap]

    def events_after(self, *, agent_id: str, epoch: int, seq: int, limit: int) -> Sequence[StoredEvent]:
        """One agent's events after (epoch, seq), in chain order."""
        found = [e for e in self.s.events.values() if e.agent_id == agent_id and (e.epoch, e.seq) > (epoch, seq)]
        return sorted(found, key=lambda e: (e.epoch, e.seq))[:limit]

    def count_events(self) -> int:
        """Counts stored events."""
        return len(self.s.events)

    # --- alerts -------------------------------------------------------------------------------
    def add_alert(self, alert: Alert) -> Alert:
        """Stores a new alert and its first evidence; returns it with its id."""
        if alert.group_key is not None and alert.status == "open" and self.open_alert_in_group(alert.group_key):
            raise AlreadyExists(f"an open alert of group {alert.group_key!r} exists")
        new_id = self.s.new_id()
        self.s.alerts[new_id] = replace(alert, id=new_id, event_ids=(), evidence_count=0)
        added = self.add_evidence(alert_id=new_id, event_ids=alert.event_ids)
        self.s.alerts[new_id] = replace(self.s.alerts[new_id], evidence_count=added)
        return replace(alert, id=new_id, evidence_count=added, event_ids=tuple(dict.fromkeys(alert.event_ids)))

    def update_alert(self, alert: Alert) -> None:
        """Overwrites a stored alert's fields (not its evidence); AlreadyExists for a second open alert of a group."""
        if alert.status == "open" and alert.group_key is not None and any(
                a.group_key == alert.group_key and a.status == "open" and a.id != alert.id for a in self.s.alerts.values()):
            raise AlreadyExists(f"another alert of group {alert.group_key!r} is open")
        if alert.id in self.s.alerts:
            self.s.alerts[alert.id] = replace(alert, event_ids=())

    def update_alerts(self, changed: Sequence[Alert]) -> None:
        """Writes the triage fields of many alerts."""
        for a in changed:
            if a.id in self.s.alerts:
                self.s.alerts[a.id] = replace(self.s.alerts[a.id], status=a.status, outcome=a.outcome,
                                              assignee=a.assignee, updated_at_ns=a.updated_at_ns)

    def add_evidence(self, *, alert_id: int, event_ids: Sequence[str]) -> int:
        """Appends the events an alert does not hold yet; returns how many were new."""
        held = self.s.evidence.setdefault(alert_id, [])
        have = set(held)
        new = [e for e in dict.fromkeys(event_ids) if e not in have]
        held.extend(new)
        return len(new)

    def _with_evidence(self, a: Alert | None) -> Alert | None:
        return None if a is None else replace(a, event_ids=tuple(self.s.evidence.get(a.id or 0, ())))

    def get_alert(self, alert_id: int) -> Alert | None:
        """Gets an alert by its id, with its evidence."""
        return self._with_evidence(self.s.alerts.get(alert_id))

    def latest_open_alert(self, *, rule: str, user: str | None = None, agent_id: str | None = None) -> Alert | None:
        """Gets the most recently updated open alert of a rule for a user and/or an agent."""
        found = [a for a in self.s.alerts.values() if a.rule == rule and a.status == "open"
                 and (user is None or a.user == user) and (agent_id is None or a.agent_id == agent_id)]
        return self._with_evidence(max(found, key=lambda a: (a.updated_at_ns, a.id or 0), default=None))

    def open_alert_in_group(self, group_key: str) -> Alert | None:
        """Gets the open alert of a group, if any."""
        found = [a for a in self.s.alerts.values() if a.group_key == group_key and a.status == "open"]
        return max(found, key=lambda a: a.id or 0, default=None)

    def list_alerts(self, *, cursor: int | None, limit: int, status: str | None = None) -> Page:
        """Lists alerts, newest first, after the cursor."""
        found = [a for i, a in sorted(self.s.alerts.items(), reverse=True)
                 if (cursor is None or i < cursor) and (status is None or a.status == status)]
        items = tuple(replace(a, event_ids=tuple(self.s.evidence.get(a.id or 0, ()))) for a in found[:limit])
        return Page(items, str(items[-1].id) if len(found) > limit and items else None)

    def count_alerts(self) -> dict[str, int]:
        """Alerts by rule."""
        out: dict[str, int] = {}
        for a in self.s.alerts.values():
            out[a.rule] = out.get(a.rule, 0) + 1
        return out

    def add_suppression(self, s: Suppression) -> Suppression:
        """Stores a suppression and returns it with its id."""
        stored = replace(s, id=self.s.new_id(), hits=0)
        self.s.suppressions[stored.id or 0] = stored
        return stored

    def list_suppressions(self, *, active_at_ns: int | None = None) -> Sequence[Suppression]:
        """Lists suppressions, newest first."""
        return [x for _, x in sorted(self.s.suppressions.items(), reverse=True)
                if active_at_ns is None or (x.lifted_at_ns is None and x.expires_at_ns > active_at_ns)]

    def count_suppressed(self, *, suppression_id: int, hits: int, at_ns: int) -> None:
        """Counts findings a suppression kept from becoming alerts."""
        x = self.s.suppressions.get(suppression_id)
        if x is not None:
            self.s.suppressions[suppression_id] = replace(x, hits=x.hits + hits, last_hit_ns=at_ns)

    def lift_suppression(self, *, suppression_id: int, now_ns: int) -> bool:
        """Ends a suppression before its expiry."""
        x = self.s.suppressions.get(suppression_id)
        if x is None or x.lifted_at_ns is not None:
            return False
        self.s.suppressions[suppression_id] = replace(x, lifted_at_ns=now_ns)
        return True

    # --- the alert queue ----------------------------------------------------------------------
    def _matching(self, q: AlertQuery) -> list[Alert]:
        found = [a for a in self.s.alerts.values() if _matches(a, q)]
        return sorted(found, key=lambda a: _order_key(a, q.sort), reverse=q.sort != "oldest")

    def query_alerts(self, q: AlertQuery, *, after: tuple[int, int] | None, limit: int) -> Page:
        """Alerts matching the query in its order, after the cursor key."""
        found = [a for a in self._matching(q) if after is None
                 or (_order_key(a, q.sort) > after if q.sort == "oldest" else _order_key(a, q.sort) < after)]
        items = tuple(found[:limit])
        last = _order_key(items[-1], q.sort) if items else (0, 0)
        cursor = (str(last[1]) if q.sort in ("newest", "oldest") else f"{last[0]}_{last[1]}")
        return Page(items, cursor if len(found) > limit and items else None)

    def count_alerts_by(self, q: AlertQuery, *, field: str) -> dict[str, int]:
        """How many alerts match, by status, rule or severity."""
        out: dict[str, int] = {}
        for a in self.s.alerts.values():
            if _matches(a, q):
                key = {"status": a.status, "rule": a.rule, "severity": a.severity}[field]
                out[key] = out.get(key, 0) + 1
        return out

    def alert_ids_matching(self, q: AlertQuery, *, limit: int) -> Sequence[int]:
        """The ids of up to ``limit`` matching alerts, in the query's order."""
        return [a.id or 0 for a in self._matching(q)[:limit]]

    def group_alerts_by_user(self, q: AlertQuery, *, offset: int, limit: int) -> Sequence[UserGroup]:
        """One row per user, most alerts first."""
        groups: dict[str, list[Alert]] = {}
        for a in self.s.alerts.values():
            if _matches(a, q) and a.user:
                groups.setdefault(a.user, []).append(a)
        rows = [UserGroup(u, len(xs), sum(x.status == "open" for x in xs), sum(x.status == "acknowledged" for x in xs),
                          sum(x.status == "closed" for x in xs), sum(x.severity in ("high", "critical") for x in xs),
                          max(x.created_at_ns for x in xs)) for u, xs in groups.items()]
        rows.sort(key=lambda g: (-g.total, -g.last_created_ns, g.user))
        return rows[offset:offset + limit]

    def get_alerts(self, alert_ids: Sequence[int]) -> Sequence[Alert]:
        """These alerts, without evidence, in id order."""
        return [self.s.alerts[i] for i in sorted(set(alert_ids)) if i in self.s.alerts]

    def _stored_evidence(self, alert_id: int) -> list[StoredEvent]:
        wanted = set(self.s.evidence.get(alert_id, ()))
        return sorted((e for e in self.s.events.values() if e.id in wanted), key=lambda e: (e.time_ns, e.row_id or 0))

    def evidence_events(self, *, alert_id: int, after: tuple[int, int] | None, limit: int) -> Sequence[StoredEvent]:
        """An alert's stored evidence events in time order."""
        return [e for e in self._stored_evidence(alert_id) if after is None or (e.time_ns, e.row_id or 0) > after][:limit]

    def count_stored_evidence(self, alert_id: int) -> int:
        """How many of an alert's evidence events are still stored."""
        return len(self._stored_evidence(alert_id))

    def agent_events_between(self, *, agent_id: str, kinds: Sequence[str], since_ns: int, until_ns: int,
                             limit: int) -> Sequence[StoredEvent]:
        """An agent's events of these kinds in the window, oldest first."""
        found = [e for e in self.s.events.values()
                 if e.agent_id == agent_id and e.kind in kinds and since_ns <= e.time_ns < until_ns]
        return sorted(found, key=lambda e: (e.time_ns, e.row_id or 0))[:limit]

    def alerts_of_agent(self, *, agent_id: str, rules: Sequence[str], since_ns: int, until_ns: int,
                        limit: int) -> Sequence[Alert]:
        """Alerts of these rules for an agent overlapping the window, oldest first."""
        found = [a for a in self.s.alerts.values() if a.agent_id == agent_id and a.rule in rules
                 and a.created_at_ns < until_ns and max(a.last_event_ns, a.updated_at_ns) >= since_ns]
        return sorted(found, key=lambda a: a.id or 0)[:limit]

    def add_saved_filter(self, f: SavedFilter) -> SavedFilter:
        """Stores a named filter."""
        if any(x.owner == f.owner and x.name == f.name for x in self.s.saved_filters.values()):
            raise AlreadyExists(f"a filter named {f.name!r} exists")
        stored = replace(f, id=self.s.new_id())
        self.s.saved_filters[stored.id or 0] = stored
        return stored

    def list_saved_filters(self, owner: str) -> Sequence[SavedFilter]:
        """An owner's filters, by name."""
        return sorted((x for x in self.s.saved_filters.values() if x.owner == owner), key=lambda x: (x.name, x.id or 0))

    def delete_saved_filter(self, *, filter_id: int, owner: str) -> SavedFilter | None:
        """Deletes one of the owner's filters."""
        x = self.s.saved_filters.get(filter_id)
        if x is None or x.owner != owner:
            return None
        del self.s.saved_filters[filter_id]
        return x

    # --- privacy (collector/privacy) ------------------------------------------------------------
    def pseudonym_secret(self) -> bytes:
        """The installation's pseudonym secret."""
        return self.s.pseudonym_secret

    def pseudonyms_for(self, user_names: Sequence[str]) -> dict[str, str]:
        """The recorded pseudonyms of these user names."""
        wanted = set(user_names)
        return {name: code for code, name in self.s.pseudonyms.items() if name in wanted}

    def user_for_pseudonym(self, code: str) -> str | None:
        """The user name a pseudonym was recorded for."""
        return self.s.pseudonyms.get(code)

    def add_pseudonym(self, *, code: str, user_name: str, now_ns: int) -> bool:
        """Records a pseudonym unless the code or the name has one."""
        if code in self.s.pseudonyms or user_name in self.s.pseudonyms.values():
            return False
        self.s.pseudonyms[code] = user_name
        return True

    # --- people and audit ---------------------------------------------------------------------
    def add_user(self, user: User) -> None:
        """Stores a new user."""
        if user.username in self.s.users:
            raise AlreadyExists(f"user {user.username!r} exists")
        if user.provider is not None and self.get_user_by_subject(provider=user.provider, subject=user.subject or ""):
            raise AlreadyExists(f"a user of {user.provider} {user.subject!r} exists")
        self.s.users[user.username] = user

    def get_user(self, username: str) -> User | None:
        """Gets a user by name."""
        return self.s.users.get(username)

    def list_users(self) -> Sequence[User]:
        """Every user, by name."""
        return [self.s.users[n] for n in sorted(self.s.users)]

    def update_user(self, user: User) -> None:
        """Replaces the stored user of that name."""
        if user.username in self.s.users:
            self.s.users[user.username] = user

    def get_user_by_subject(self, *, provider: str, subject: str) -> User | None:
        """The user a provider knows by ``subject``."""
        return next((u for u in self.s.users.values() if u.provider == provider and u.subject == subject), None)

    def add_sso_pending(self, pending: SsoPending) -> None:
        """Stores a pending provider sign-in."""
        self.s.sso_pending[pending.state_hash] = pending

    def take_sso_pending(self, *, state_hash: str) -> SsoPending | None:
        """Removes and returns a pending provider sign-in."""
        return self.s.sso_pending.pop(state_hash, None)

    def delete_sso_pending_before(self, *, before_ns: int) -> int:
        """Forgets old pending sign-ins."""
        old = [h for h, p in self.s.sso_pending.items() if p.created_at_ns < before_ns]
        for h in old:
            del self.s.sso_pending[h]
        return len(old)

    def add_token(self, *, token_hash: str, username: str, kind: str, created_at_ns: int, expires_at_ns: int | None,
                  name: str | None = None) -> None:
        """Stores a token's hash for a user."""
        if token_hash in self.s.user_tokens:
            raise AlreadyExists("token exists")
        self.s.user_tokens[token_hash] = UserToken(token_hash, username, kind, created_at_ns, expires_at_ns, False, name)

    def get_token(self, *, token_hash: str) -> UserToken | None:
        """Gets a token by the hash of its secret."""
        return self.s.user_tokens.get(token_hash)

    def user_for_token(self, *, token_hash: str, kind: str, now_ns: int) -> User | None:
        """Gets the enabled user a valid token belongs to."""
        t = self.s.user_tokens.get(token_hash)
        if t is None or t.kind != kind or t.revoked or (t.expires_at_ns is not None and t.expires_at_ns <= now_ns):
            return None
        user = self.s.users.get(t.username)
        return None if user is None or user.disabled else user

    def touch_token(self, *, token_hash: str, now_ns: int) -> None:
        """Records a token's use."""
        t = self.s.user_tokens.get(token_hash)
        if t is not None:
            self.s.user_tokens[token_hash] = replace(t, last_used_ns=now_ns)

    def list_tokens(self, *, username: str, kind: str) -> Sequence[UserToken]:
        """A user's tokens of one kind, newest first."""
        found = [t for t in self.s.user_tokens.values() if t.username == username and t.kind == kind]
        return sorted(found, key=lambda t: (-t.created_at_ns, t.token_hash))

    def revoke_token(self, *, token_hash: str) -> None:
        """Revokes a token."""
        t = self.s.user_tokens.get(token_hash)
        if t is not None:
            self.s.user_tokens[token_hash] = replace(t, revoked=True)

    def revoke_user_tokens(self, *, username: str, kind: str | None = None, keep: str | None = None) -> int:
        """Revokes a user's tokens except ``keep``; returns how many."""
        n = 0
        for h, t in list(self.s.user_tokens.items()):
            if t.username == username and not t.revoked and (kind is None or t.kind == kind) and h != keep:
                self.s.user_tokens[h] = replace(t, revoked=True)
                n += 1
        return n

    def get_throttle(self, *, scope: str, key: str) -> ThrottleState | None:
        """The failures counted under a key."""
        return self.s.throttle.get((scope, key))

    def put_throttle(self, state: ThrottleState) -> None:
        """Stores the failures counted under a key."""
        self.s.throttle[(state.scope, state.key)] = state

    def delete_throttle(self, *, scope: str, key: str) -> None:
        """Forgets a key's failures."""
        self.s.throttle.pop((scope, key), None)

    def get_service_key(self, *, name: str) -> bytes | None:
        """A stored key, or None."""
        return self.s.service_keys.get(name)

    def ensure_service_key(self, *, name: str, secret: bytes) -> bytes:
        """Stores a key unless one is there; returns the stored one."""
        return self.s.service_keys.setdefault(name, secret)

    def append_audit(self, entry: AuditEntry) -> None:
        """Appends one entry to the chain."""
        details_json = canonical_details(entry.details)
        cut = self.latest_audit_anchor()  # rows up to a retention cut are gone: the chain goes on from it
        prev = self.s.audit[-1].row_hash if self.s.audit else cut.cut_hash if cut else GENESIS
        assert prev is not None
        last_id = (self.s.audit[-1].id or 0) if self.s.audit else (cut.cut_id if cut else 0)
        row_hash = audit_row_hash(prev, entry.at_ns, entry.actor, entry.action, entry.target, details_json)
        self.s.audit.append(replace(entry, id=last_id + 1, details=json.loads(details_json),
                                    prev_hash=prev, row_hash=row_hash))

    def list_audit(self, *, cursor: int | None, limit: int, filter: AuditFilter | None = None,
                   oldest_first: bool = False) -> Page:
        """Entries matching the filter, newest first (or oldest first), a page at a time."""
        f = filter or AuditFilter()
        rows = self.s.audit if oldest_first else list(reversed(self.s.audit))
        found = [e for e in rows
                 if (cursor is None or ((e.id or 0) > cursor if oldest_first else (e.id or 0) < cursor))
                 and (f.actor is None or e.actor == f.actor) and (f.action is None or e.action == f.action)
                 and (f.target is None or e.target == f.target)
                 and (f.since_ns is None or e.at_ns >= f.since_ns) and (f.until_ns is None or e.at_ns < f.until_ns)]
        items = tuple(found[:limit])
        return Page(items, str(items[-1].id) if len(found) > limit and items else None)

    def audit_rows(self, *, after_id: int, limit: int) -> Sequence[AuditRow]:
        """Rows in id order after ``after_id``, as stored."""
        return [AuditRow(e.id or 0, e.at_ns, e.actor, e.action, e.target, canonical_details(e.details), e.prev_hash,
                         e.row_hash) for e in self.s.audit if (e.id or 0) > after_id][:limit]

    def audit_head(self) -> AuditHead | None:
        """The chain's last row."""
        cut = self.latest_audit_anchor()
        if not self.s.audit:
            return None if cut is None else AuditHead(cut.cut_id, cut.cut_hash, cut.rows)
        last = self.s.audit[-1]
        return AuditHead(last.id or 0, last.row_hash or GENESIS, len(self.s.audit) + (cut.rows if cut else 0))

    # --- cases (collector/cases) -----------------------------------------------------------------
    def add_case(self, case: Case) -> Case:
        """Stores a new case with its alerts; returns it with its id."""
        stored = replace(case, id=self.s.new_id(), alert_ids=tuple(dict.fromkeys(case.alert_ids)))
        self.s.cases[stored.id or 0] = stored
        return stored

    def get_case(self, case_id: int) -> Case | None:
        """Gets a case by its id."""
        return self.s.cases.get(case_id)

    def update_case(self, case: Case, *, only_from: str | None = None) -> bool:
        """Overwrites a case's fields but its alerts, if its state is still ``only_from`` (when given)."""
        old = self.s.cases.get(case.id or 0)
        if old is None or (only_from is not None and old.state != only_from):
            return False
        self.s.cases[old.id or 0] = replace(case, alert_ids=old.alert_ids)
        return True

    def list_cases(self, *, cursor: int | None, limit: int, state: str | None = None,
                   assignee: str | None = None) -> Page:
        """Cases, newest first, after the cursor."""
        found = [c for i, c in sorted(self.s.cases.items(), reverse=True)
                 if (cursor is None or i < cursor) and (state is None or c.state == state)
                 and (assignee is None or c.assignee == assignee)]
        items = tuple(found[:limit])
        return Page(items, str(items[-1].id) if len(found) > limit and items else None)

    def cases_for_alert(self, alert_id: int) -> Sequence[int]:
        """The ids of the cases holding an alert, oldest first."""
        return [i for i, c in sorted(self.s.cases.items()) if alert_id in c.alert_ids]

    def incident_first_ns(self, alert_ids: Sequence[int]) -> int | None:
        """The earliest stored event time among the alerts' evidence."""
        wanted = {e for a in alert_ids for e in self.s.evidence.get(a, ())}
        times = [e.time_ns for e in self.s.events.values() if e.id in wanted]
        return min(times) if times else None

    def add_case_history(self, entry: HistoryEntry) -> HistoryEntry:
        """Appends one history row."""
        stored = replace(entry, id=len(self.s.case_history) + 1, before=copy.deepcopy(dict(entry.before)),
                         after=copy.deepcopy(dict(entry.after)))
        self.s.case_history.append(stored)
        return stored

    def case_history(self, case_id: int) -> Sequence[HistoryEntry]:
        """A case's history, oldest first."""
        return [h for h in self.s.case_history if h.case_id == case_id]

    def case_changes_after(self, *, after_id: int, limit: int) -> Sequence[CaseChange]:
        """State changes after a history id, in id order."""
        found = [CaseChange(h.id or 0, h.case_id, h.from_state, h.to_state, h.actor, h.at_ns)
                 for h in self.s.case_history if (h.id or 0) > after_id and h.to_state is not None]
        return found[:limit]

    def add_comment(self, comment: Comment) -> Comment:
        """Stores a comment."""
        stored = replace(comment, id=self.s.new_id())
        self.s.case_comments.append(stored)
        return stored

    def list_comments(self, case_id: int) -> Sequence[Comment]:
        """A case's comments, oldest first."""
        return [c for c in self.s.case_comments if c.case_id == case_id]

    def add_attachment(self, attachment: Attachment, content: bytes) -> Attachment:
        """Stores a file's record, and its content once per hash."""
        stored = replace(attachment, id=self.s.new_id())
        self.s.case_blobs.setdefault(attachment.sha256, bytes(content))
        self.s.case_attachments[stored.id or 0] = stored
        return stored

    def list_attachments(self, case_id: int) -> Sequence[Attachment]:
        """A case's files, oldest first."""
        return [a for _, a in sorted(self.s.case_attachments.items()) if a.case_id == case_id]

    def get_attachment(self, attachment_id: int) -> Attachment | None:
        """Gets a file's record."""
        return self.s.case_attachments.get(attachment_id)

    def attachment_content(self, sha256: str) -> bytes | None:
        """A file's content by its hash."""
        return self.s.case_blobs.get(sha256)

    def add_hr_record(self, record: HrRecord) -> HrRecord:
        """Stores one of HR's records."""
        stored = replace(record, id=self.s.new_id(), data=copy.deepcopy(dict(record.data)))
        self.s.hr_records.append(stored)
        return stored

    def hr_records(self, case_id: int) -> Sequence[HrRecord]:
        """HR's records on a case, oldest first."""
        return [r for r in self.s.hr_records if r.case_id == case_id]

    def add_handoff(self, handoff: Handoff) -> Handoff:
        """Writes an outbox row."""
        if any(h.case_id == handoff.case_id and h.number == handoff.number for h in self.s.handoffs.values()):
            raise AlreadyExists(f"case {handoff.case_id} already has hand-off {handoff.number}")
        stored = replace(handoff, id=self.s.new_id())
        self.s.handoffs[stored.id or 0] = stored
        return stored

    def handoffs(self, case_id: int) -> Sequence[Handoff]:
        """A case's hand-offs, by number."""
        return sorted((h for h in self.s.handoffs.values() if h.case_id == case_id), key=lambda h: h.number)

    def claim_handoffs(self, *, now_ns: int, lease_ns: int, limit: int) -> Sequence[Handoff]:
        """Leases outbox rows with work due that no worker holds."""
        out: list[Handoff] = []
        for i, h in sorted(self.s.handoffs.items()):
            if len(out) >= limit:
                break
            if h.state in ("pending", "accepted") and 0 < h.next_attempt_ns <= now_ns and h.lease_until_ns <= now_ns:
                claimed = replace(h, lease_until_ns=now_ns + lease_ns,
                                  attempts=h.attempts + (1 if h.state == "pending" else 0))
                self.s.handoffs[i] = claimed
                out.append(claimed)
        return out

    def save_handoff(self, handoff: Handoff) -> None:
        """Records what happened to a hand-off."""
        old = self.s.handoffs.get(handoff.id or 0)
        if old is not None:
            self.s.handoffs[old.id or 0] = replace(handoff, payload=old.payload, case_id=old.case_id,
                                                   number=old.number)


    # --- notifications (collector/notify) -------------------------------------------------------
    def alerts_after(self, *, after_id: int, limit: int) -> Sequence[AlertFact]:
        """Alerts with an id above after_id, in id order, as (id, rule, severity)."""
        return [AlertFact(i, a.rule, a.severity) for i, a in sorted(self.s.alerts.items()) if i > after_id][:limit]

    def case_history_settled(self) -> None:
        """One transaction at a time: nothing is in flight."""

    def notify_position(self, source: str) -> int:
        """The id up to which a source was turned into notifications."""
        return self.s.notify_positions.get(source, 0)

    def set_notify_position(self, *, source: str, after_id: int) -> None:
        """Records a source's position."""
        self.s.notify_positions[source] = after_id

    def add_notifications(self, rows: Sequence[Notification]) -> int:
        """Adds outbox rows, skipping those already there."""
        have = {(n.target, n.kind, n.source_id) for n in self.s.notifications.values()}
        added = 0
        for n in rows:
            if (n.target, n.kind, n.source_id) in have:
                continue
            have.add((n.target, n.kind, n.source_id))
            new_id = self.s.new_id()
            self.s.notifications[new_id] = replace(n, id=new_id)
            added += 1
        return added

    def due_notifications(self, *, target: str, now_ns: int, limit: int) -> Sequence[Notification]:
        """A target's rows due by now, oldest first."""
        return [n for _, n in sorted(self.s.notifications.items()) if n.target == target
                and n.status in ("pending", "sending") and n.next_attempt_ns <= now_ns][:limit]

    def claim_notifications(self, *, ids: Sequence[int], delivery_id: int, now_ns: int, lease_until_ns: int) -> int:
        """Leases due rows for one delivery."""
        done = 0
        for i in ids:
            n = self.s.notifications.get(i)
            if n is None or n.status not in ("pending", "sending") or n.next_attempt_ns > now_ns:
                continue
            self.s.notifications[i] = replace(n, status="sending", attempts=n.attempts + 1,
                                              next_attempt_ns=lease_until_ns, delivery_id=delivery_id)
            done += 1
        return done

    def finish_notifications(self, *, ids: Sequence[int], status: str, now_ns: int, next_attempt_ns: int,
                             error: str | None) -> None:
        """Records a delivery's result on its rows still sending."""
        for i in ids:
            n = self.s.notifications.get(i)
            if n is not None and n.status == "sending":
                self.s.notifications[i] = replace(n, status=status, next_attempt_ns=next_attempt_ns, last_error=error,
                                                  sent_at_ns=now_ns if status == "sent" else n.sent_at_ns)

    def record_send(self, *, target: str, at_ns: int, keep_since_ns: int) -> None:
        """Records one message sent to a target and forgets older sends."""
        kept = [t for t in self.s.notify_sends.get(target, []) if t >= keep_since_ns]
        self.s.notify_sends[target] = sorted([*kept, at_ns])

    def recent_sends(self, *, target: str, since_ns: int) -> Sequence[int]:
        """When messages went to a target since since_ns, oldest first."""
        return [t for t in self.s.notify_sends.get(target, []) if t >= since_ns]

    def list_notifications(self, *, cursor: int | None, limit: int, status: str | None = None) -> Page:
        """Outbox rows, newest first, after the cursor."""
        found = [n for i, n in sorted(self.s.notifications.items(), reverse=True)
                 if (cursor is None or i < cursor) and (status is None or n.status == status)]
        items = tuple(found[:limit])
        return Page(items, str(items[-1].id) if len(found) > limit and items else None)

    def count_notifications(self) -> dict[tuple[str, str], int]:
        """Outbox rows by (channel, status)."""
        out: dict[tuple[str, str], int] = {}
        for n in self.s.notifications.values():
            out[(n.channel, n.status)] = out.get((n.channel, n.status), 0) + 1
        return out

    def claim_notify(self) -> bool:
        """One transaction at a time: always free."""
        return True

    # --- tree ---------------------------------------------------------------------------------
    def add_tree_head(self, head: SignedTreeHead, leaves: Sequence[TreeLeaf], *, previous_size: int) -> None:
        """Appends leaves and their signed head if the tree still has previous_size leaves."""
        current = self.s.heads_signed[-1].tree_size if self.s.heads_signed else 0
        if current != previous_size:
            raise ChainConflict(f"the tree has {current} leaves, not {previous_size}")
        taken = {x.batch_row_id for x in self.s.leaves}
        if any(x.batch_row_id in taken or x.leaf_index < len(self.s.leaves) for x in leaves):
            raise ChainConflict("another signer extended the tree first")
        if any(h.tree_size == head.tree_size for h in self.s.heads_signed):
            raise ChainConflict("another signer extended the tree first")
        self.s.leaves.extend(leaves)
        self.s.heads_signed.append(head)
        self.s.heads_signed.sort(key=lambda h: h.tree_size)

    def latest_tree_head(self) -> SignedTreeHead | None:
        """Gets the signed tree head with the most leaves."""
        return self.s.heads_signed[-1] if self.s.heads_signed else None

    def list_tree_heads(self) -> Sequence[SignedTreeHead]:
        """Lists all signed tree heads, smallest tree first."""
        return list(self.s.heads_signed)

    def list_tree_leaves(self, *, start: int, limit: int) -> Sequence[TreeLeaf]:
        """Lists the tree's leaves from leaf index ``start`` on."""
        return sorted((x for x in self.s.leaves if x.leaf_index >= start), key=lambda x: x.leaf_index)[:limit]

    def batches_outside_tree(self, *, limit: int) -> Sequence[BatchRow]:
        """Lists stored batches that are no leaf of the tree yet, in row order."""
        taken = {x.batch_row_id for x in self.s.leaves}
        return [BatchRow(r, b, self.s.pruned.get(r)) for r, b in sorted(self.s.batches.items()) if r not in taken][:limit]

    def batch_leaves(self, *, after_row_id: int, limit: int) -> Sequence[BatchRow]:
        """Lists stored batches with row_id > after_row_id in row order."""
        return [BatchRow(r, b, self.s.pruned.get(r)) for r, b in sorted(self.s.batches.items()) if r > after_row_id][:limit]

    def event_rows(self, *, after_row_id: int, limit: int) -> Sequence[EventRow]:
        """Lists events rows with row_id > after_row_id in row order."""
        import json

        out = []
        for r, e in sorted(self.s.events.items()):
            if r > after_row_id:
                out.append(EventRow(r, e.agent_id, e.epoch, e.seq, e.id, e.kind, e.time_ns, e.path, e.dest_path, e.size,
                                    e.sha256, e.user, e.uid, e.pid, e.process, e.exe,
                                    json.dumps(dict(e.attributes), sort_keys=True, ensure_ascii=False)))
                if len(out) == limit:
                    break
        return out

    # verify's ordered, paged reads (the SQL ones: collector/storage/sql/audit_reads.py)
    def _event_row(self, r: int, e: StoredEvent) -> EventRow:
        import json

        return EventRow(r, e.agent_id, e.epoch, e.seq, e.id, e.kind, e.time_ns, e.path, e.dest_path, e.size,
                        e.sha256, e.user, e.uid, e.pid, e.process, e.exe,
                        json.dumps(dict(e.attributes), sort_keys=True, ensure_ascii=False))

    def stored_agent_ids(self) -> Sequence[str]:
        """Every agent id a batch or an event names, sorted."""
        return sorted({b.agent_id for b in self.s.batches.values()} | {e.agent_id for e in self.s.events.values()})

    def chain_batches(self, *, agent_id: str, after: tuple[int, int, int] | None,
                      limit: int) -> Sequence[tuple[BatchRow, TreeLeaf | None]]:
        """One agent's batches after (epoch, first_seq, row_id) in that order, each with its tree leaf."""
        leaf_of = {x.batch_row_id: x for x in self.s.leaves}
        found = sorted((b.epoch, b.first_seq, r) for r, b in self.s.batches.items() if b.agent_id == agent_id)
        keys = [k for k in found if after is None or k > after][:limit]
        return [(BatchRow(r, self.s.batches[r], self.s.pruned.get(r)), leaf_of.get(r)) for _e, _s, r in keys]

    def chain_event_rows(self, *, agent_id: str, after: tuple[int, int, int] | None, limit: int) -> Sequence[EventRow]:
        """One agent's events after (epoch, seq, row_id) in that order."""
        found = sorted((e.epoch, e.seq, r) for r, e in self.s.events.items() if e.agent_id == agent_id)
        keys = [k for k in found if after is None or k > after][:limit]
        return [self._event_row(r, self.s.events[r]) for _e, _s, r in keys]

    def batch_positions(self, *, after_row_id: int, limit: int) -> Sequence[tuple[int, str, int, int, int]]:
        """(row_id, agent_id, epoch, first_seq, last_seq) of batches in row order."""
        return [(r, b.agent_id, b.epoch, b.first_seq, b.last_seq)
                for r, b in sorted(self.s.batches.items()) if r > after_row_id][:limit]

    def event_positions(self, *, after_row_id: int, limit: int) -> Sequence[tuple[int, str, int, int]]:
        """(row_id, agent_id, epoch, seq) of events in row order."""
        return [(r, e.agent_id, e.epoch, e.seq) for r, e in sorted(self.s.events.items()) if r > after_row_id][:limit]

    def leaves_without_batch(self, *, after_index: int, limit: int) -> Sequence[TreeLeaf]:
        """Tree leaves whose batch is not stored, in leaf order."""
        return sorted((x for x in self.s.leaves if x.leaf_index > after_index and x.batch_row_id not in self.s.batches),
                      key=lambda x: x.leaf_index)[:limit]

    # --- retention ----------------------------------------------------------------------------
    def add_legal_hold(self, hold: LegalHold) -> LegalHold:
        """Stores a legal hold and returns it with its id."""
        stored = replace(hold, id=self.s.new_id())
        self.s.holds[stored.id or 0] = stored
        return stored

    def release_legal_hold(self, *, hold_id: int, now_ns: int) -> bool:
        """Releases an active hold."""
        h = self.s.holds.get(hold_id)
        if h is None or h.released_at_ns is not None:
            return False
        self.s.holds[hold_id] = replace(h, released_at_ns=now_ns)
        return True

    def list_legal_holds(self, *, active_only: bool = True) -> Sequence[LegalHold]:
        """Lists legal holds, oldest first."""
        return [h for _, h in sorted(self.s.holds.items()) if not active_only or h.released_at_ns is None]

    def prune_batches(self, *, before_ns: int, now_ns: int, limit: int, after_row_id: int = 0,
                      held_cases: Sequence[int] = ()) -> RetentionRun:
        """Deletes the events of unheld batches received before ``before_ns``."""
        holds = self.list_legal_holds()
        case_events = self._case_evidence(held_cases)
        leaves = {x.batch_row_id for x in self.s.leaves}
        candidates = [(r, b) for r, b in sorted(self.s.batches.items())
                      if b.received_at_ns < before_ns and r not in self.s.pruned and r > after_row_id and r in leaves][:limit]
        pruned = held = deleted = 0
        why: dict[str, int] = {}
        for r, b in candidates:
            mine = [rid for rid, e in self.s.events.items()
                    if e.agent_id == b.agent_id and e.epoch == b.epoch and b.first_seq <= e.seq <= b.last_seq]
            reason = next((f"legal hold #{h.id}" for h in holds for rid in mine
                           if covers(h, user=self.s.events[rid].user, agent_id=b.agent_id,
                                     time_ns=self.s.events[rid].time_ns)), None)
            if reason is None:
                reason = next((case_events[self.s.events[rid].id] for rid in mine
                               if self.s.events[rid].id in case_events), None)
            if reason is not None:
                held += 1
                why[reason] = why.get(reason, 0) + 1
                continue
            for rid in mine:
                e = self.s.events.pop(rid)
                self.s.event_at.discard((e.agent_id, e.epoch, e.seq))
            deleted += len(mine)
            self.s.batches[r] = replace(b, canonical=b"")
            self.s.pruned[r] = now_ns
            pruned += 1
        return self._record_run(RetentionRun(now_ns, before_ns, pruned, deleted, held, records=pruned, held=held,
                                             held_why=why,
                                             last_row_id=candidates[-1][0] if candidates else after_row_id))

    def _case_evidence(self, case_ids: Sequence[int]) -> dict[str, str]:
        """event id -> "case #n" for the evidence of these cases' alerts."""
        out: dict[str, str] = {}
        for cid in sorted(case_ids):
            case = self.s.cases.get(cid)
            for aid in case.alert_ids if case else ():
                for eid in self.s.evidence.get(aid, []):
                    out.setdefault(eid, f"case #{cid}")
        return out

    def _record_run(self, run: RetentionRun) -> RetentionRun:
        stored = replace(run, id=len(self.s.runs) + 1)
        self.s.runs.append(stored)
        return stored

    def case_holds(self, *, payroll_since_ns: int) -> Sequence[CaseHold]:
        """Open cases, and cases handed to payroll since ``payroll_since_ns``."""
        paid = {h.case_id for h in self.s.handoffs.values() if h.created_at_ns >= payroll_since_ns}
        out = []
        for cid, c in sorted(self.s.cases.items()):
            if c.state not in _CASE_DONE:
                out.append(CaseHold(cid, c.subject_user, "open", c.created_at_ns))
            elif cid in paid:
                out.append(CaseHold(cid, c.subject_user, "payroll", c.created_at_ns))
        return out

    def prune_alerts(self, *, before_ns: int, now_ns: int, limit: int, after_id: int = 0) -> RetentionRun:
        """Deletes old alerts no case holds and no hold covers."""
        holds = self.list_legal_holds()
        in_case = {aid: cid for cid, c in sorted(self.s.cases.items(), reverse=True) for aid in c.alert_ids}
        candidates = [a for i, a in sorted(self.s.alerts.items()) if i > after_id and a.updated_at_ns < before_ns][:limit]
        deleted = 0
        why: dict[str, int] = {}
        for a in candidates:
            reason = (f"case #{in_case[a.id or 0]}" if (a.id or 0) in in_case else
                      next((f"legal hold #{h.id}" for h in holds if covers_span(
                          h, user=a.user, agent_id=a.agent_id, since_ns=a.created_at_ns,
                          until_ns=max(a.last_event_ns, a.created_at_ns))), None))
            if reason is not None:
                why[reason] = why.get(reason, 0) + 1
                continue
            del self.s.alerts[a.id or 0]
            self.s.evidence.pop(a.id or 0, None)
            deleted += 1
        held = sum(why.values())
        return self._record_run(RetentionRun(now_ns, before_ns, 0, 0, 0, kind="alerts", records=deleted, held=held,
                                             held_why=why, last_row_id=(candidates[-1].id or 0) if candidates else after_id))

    def prune_cases(self, *, before_ns: int, payroll_since_ns: int, now_ns: int, limit: int,
                    after_id: int = 0) -> RetentionRun:
        """Deletes old closed or dismissed cases with everything on them, unless payroll or a hold keeps them."""
        holds = self.list_legal_holds()
        paid = {h.case_id for h in self.s.handoffs.values() if h.created_at_ns >= payroll_since_ns}
        candidates = [c for i, c in sorted(self.s.cases.items()) if i > after_id and c.updated_at_ns < before_ns][:limit]
        deleted = 0
        why: dict[str, int] = {}
        for c in candidates:
            cid = c.id or 0
            reason = ("open" if c.state not in _CASE_DONE else "payroll minimum" if cid in paid else
                      next((f"legal hold #{h.id}" for h in holds if covers_span(
                          h, user=c.subject_user, agent_id=None, since_ns=c.created_at_ns, until_ns=c.updated_at_ns)),
                           None))
            if reason is not None:
                why[reason] = why.get(reason, 0) + 1
                continue
            del self.s.cases[cid]
            self.s.case_history = [h for h in self.s.case_history if h.case_id != cid]
            self.s.case_comments = [x for x in self.s.case_comments if x.case_id != cid]
            self.s.hr_records = [x for x in self.s.hr_records if x.case_id != cid]
            self.s.handoffs = {k: h for k, h in self.s.handoffs.items() if h.case_id != cid}
            self.s.case_attachments = {k: x for k, x in self.s.case_attachments.items() if x.case_id != cid}
            used = {x.sha256 for x in self.s.case_attachments.values()}
            self.s.case_blobs = {k: v for k, v in self.s.case_blobs.items() if k in used}
            deleted += 1
        return self._record_run(RetentionRun(now_ns, before_ns, 0, 0, 0, kind="cases", records=deleted,
                                             held=sum(why.values()), held_why=why,
                                             last_row_id=(candidates[-1].id or 0) if candidates else after_id))

    def prune_notifications(self, *, before_ns: int, now_ns: int, limit: int) -> RetentionRun:
        """Deletes old sent or failed outbox rows."""
        old = [i for i, n in sorted(self.s.notifications.items()) if n.created_at_ns < before_ns]
        gone = [i for i in old if self.s.notifications[i].status in ("sent", "failed")][:limit]
        for i in gone:
            del self.s.notifications[i]
        waiting = len(old) - len(gone) if len(gone) < limit else 0
        return self._record_run(RetentionRun(now_ns, before_ns, 0, 0, 0, kind="notifications", records=len(gone),
                                             held=waiting, held_why={"not delivered yet": waiting} if waiting else {}))

    def prune_audit(self, *, before_ns: int, now_ns: int, held_why: Mapping[str, int]) -> RetentionRun:
        """Cuts the oldest rows before ``before_ns`` off the audit log, with an anchor at the cut."""
        n = 0
        while n < len(self.s.audit) and self.s.audit[n].at_ns < before_ns:
            n += 1
        if n:
            last = self.s.audit[n - 1]
            before = self.latest_audit_anchor()
            self.s.audit_anchors.append(AuditAnchor(now_ns, last.id or 0, last.row_hash or GENESIS,
                                                    (before.rows if before else 0) + n, before_ns,
                                                    id=len(self.s.audit_anchors) + 1))
            del self.s.audit[:n]
        return self._record_run(RetentionRun(now_ns, before_ns, 0, 0, 0, kind="audit", records=n,
                                             held=0, held_why=dict(held_why)))

    def latest_audit_anchor(self) -> AuditAnchor | None:
        """The newest cut of the audit log."""
        return self.s.audit_anchors[-1] if self.s.audit_anchors else None

    def list_retention_runs(self) -> Sequence[RetentionRun]:
        """Lists retention runs, oldest first."""
        return list(self.s.runs)

    # --- witnesses and evidence bundles (collector/evidence) ----------------------------------
    def add_cosignature(self, c: StoredCosignature) -> bool:
        """Keeps a cosignature; False if that witness already cosigned that size."""
        if (c.witness, c.tree_size) in self.s.cosignatures:
            return False
        self.s.cosignatures[(c.witness, c.tree_size)] = c
        return True

    def cosignatures(self, *, tree_sizes: Sequence[int] | None = None) -> Sequence[StoredCosignature]:
        """Cosignatures on these sizes (None: all), by size then witness."""
        wanted = None if tree_sizes is None else set(tree_sizes)
        return [c for (_w, size), c in sorted(self.s.cosignatures.items(), key=lambda kv: (kv[0][1], kv[0][0]))
                if wanted is None or size in wanted]

    def latest_cosignature(self, witness: str) -> StoredCosignature | None:
        """This witness's cosignature on the largest head."""
        mine = [c for (w, _s), c in self.s.cosignatures.items() if w == witness]
        return max(mine, key=lambda c: c.tree_size, default=None)

    def tree_head_at(self, tree_size: int) -> SignedTreeHead | None:
        """The signed head of exactly ``tree_size`` leaves."""
        return next((h for h in self.s.heads_signed if h.tree_size == tree_size), None)

    def first_head_covering(self, leaf_index: int) -> SignedTreeHead | None:
        """The smallest signed head whose tree holds the leaf."""
        return min((h for h in self.s.heads_signed if h.tree_size > leaf_index), key=lambda h: h.tree_size, default=None)

    def batch_of_event(self, *, agent_id: str, epoch: int, seq: int) -> tuple[BatchRow, TreeLeaf | None] | None:
        """The stored batch that carried the event, with its tree leaf."""
        for r, b in self.s.batches.items():
            if b.agent_id == agent_id and b.epoch == epoch and b.first_seq <= seq <= b.last_seq:
                leaf = next((x for x in self.s.leaves if x.batch_row_id == r), None)
                return BatchRow(r, b, self.s.pruned.get(r)), leaf
        return None

    def agent_certificates(self, agent_id: str) -> Sequence[CertificateRecord]:
        """The certificates issued to an agent (the memory store keeps no validity times)."""
        return [CertificateRecord(str(serial), agent, 0, 0, None)
                for serial, (agent, _revoked) in sorted(self.s.certificates.items()) if agent == agent_id]


def _matches(a: Alert, q: AlertQuery) -> bool:
    return ((not q.rules or a.rule in q.rules) and (not q.severities or a.severity in q.severities)
            and (not q.statuses or a.status in q.statuses) and (q.user is None or a.user == q.user)
            and (q.agent_id is None or a.agent_id == q.agent_id)
            and (q.since_ns is None or a.created_at_ns >= q.since_ns)
            and (q.until_ns is None or a.created_at_ns < q.until_ns)
            and (q.assignee is None or (a.assignee or "") == q.assignee))


def _order_key(a: Alert, sort: str) -> tuple[int, int]:
    if sort == "severity":
        return (SEVERITY_RANK.get(a.severity, 0), a.id or 0)
    if sort == "evidence":
        return (a.evidence_count, a.id or 0)
    return (a.id or 0, a.id or 0)


class MemoryStore:
    """``Store`` in memory; one transaction at a time."""

    def __init__(self) -> None:
        self._state = _State()
        self._lock = threading.RLock()
        self.available = True  # a test sets False to see how callers meet StoreUnavailable

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        """A unit of work on a copy of the state, kept only if it ends without an exception."""
        from collector.storage.base import StoreUnavailable

        with self._lock:
            if not self.available:
                raise StoreUnavailable("the database cannot be reached or written; retry later")
            work = copy.deepcopy(self._state)
            yield MemoryTransaction(work)
            self._state = work

    read = transaction

    def health(self) -> str | None:
        """Returns None while the store is available."""
        return None if self.available else "the database cannot be reached or written; retry later"

    def close(self) -> None:
        """Nothing to release."""
