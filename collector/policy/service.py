"""Policies: versions saved after the agent's parser accepts them, labels assigned, agents' reports recorded.

Every function works in the caller's transaction; each change and its audit row commit together.
``record_reports`` runs on the ingest path inside the batch's transaction: it reads one state row
and writes it only when the agent said something new (a ``policy.applied`` or ``policy.refused``,
or a heartbeat naming another policy than recorded), and raises one ``policy_refused`` alert per
(agent, policy version) refused.

Errors::

    PolicyProblem (status, message, key)    422 a document or name the agent would refuse; 404 no such
                                            policy; 409 a concurrent edit took the version number
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Protocol, Sequence

from shoumi.signed_policy import document_sha256

from collector.alerts.service import raise_alert
from collector.audit.models import AuditEntry
from collector.events.models import StoredEvent
from collector.fleet.models import AgentRecord
from collector.policy.document import DocumentError, check_document, normalize
from collector.policy.models import (DEFAULT_LABEL, MAX_COMMENT, MAX_PRIORITY, AgentPolicyState, Assignment,
                                     PolicyVersion, by_label_of, check_label, check_name, resolve)
from collector.storage.base import AgentArea, AlertArea, AlreadyExists, AuditArea, PolicyArea

__all__ = ["PolicyProblem", "save_version", "assign", "summaries", "PolicySummary", "AgentPolicyView",
           "agent_view", "wanted_for", "wanted_by_labels", "labels_of", "record_reports", "reported", "said_in_status",
           "applied_of",
           "REPORT_KINDS", "STATUS_KINDS", "MAX_LABELS_ASSIGNED"]

LOCAL_SOURCE = "local"  # the agent runs its own agent.toml (agent/policy_push.py reports it as name "local")
REPORT_KINDS = frozenset({"policy.applied", "policy.refused"})
STATUS_KINDS = frozenset({"agent.heartbeat", "agent.start"})
MAX_LABELS_ASSIGNED = 200
_MAX_REASON = 500


class PolicyProblem(Exception):
    """A policy change that cannot be made; ``status`` is an HTTP status hint, ``key`` the document's key."""

    def __init__(self, status: int, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.key = key


class _WriteTx(PolicyArea, AuditArea, Protocol):
    """What changing a policy needs."""


class _ReportTx(PolicyArea, AlertArea, Protocol):
    """What recording an agent's report needs."""


class _ViewTx(PolicyArea, AgentArea, Protocol):
    """What showing policies and agents needs."""


def save_version(*, tx: _WriteTx, name: str, document: str, author: str, comment: str,
                 now_ns: int) -> tuple[PolicyVersion, bool]:
    """Saves a document as the policy's next version if the agent's parser accepts it; returns it and
    whether it is new (a document equal to the newest version's is not saved again)."""
    try:
        check_name(name)
        document = normalize(document)
        check_document(document)
    except DocumentError as exc:
        raise PolicyProblem(422, f"the agent would refuse this policy: {exc}", key=exc.key) from exc
    except ValueError as exc:
        raise PolicyProblem(422, str(exc), key="name") from exc
    if len(comment) > MAX_COMMENT:
        raise PolicyProblem(422, f"a comment is at most {MAX_COMMENT} characters", key="comment")
    sha = document_sha256(document.encode("utf-8"))
    latest = tx.get_policy_version(name=name)
    if latest is not None and latest.sha256 == sha:
        return latest, False
    made = PolicyVersion(name, 1 if latest is None else latest.version + 1, document, sha, author, now_ns,
                         comment.strip())
    try:
        tx.add_policy_version(made)
    except AlreadyExists as exc:
        raise PolicyProblem(409, f"policy {name} was edited meanwhile (version {made.version} exists): "
                                 "reload it and edit again") from exc
    tx.append_audit(AuditEntry(now_ns, author, "policy.version", name,
                               {"version": made.version, "sha256": sha, "comment": made.comment,
                                "previous": None if latest is None else latest.version}))
    return made, True


def assign(*, tx: _WriteTx, name: str, labels: Iterable[str], priority: int, actor: str,
           now_ns: int) -> list[Assignment]:
    """Makes ``labels`` exactly the labels that carry this policy, at ``priority`` (a label held by another
    policy moves here); audited with before and after."""
    if tx.get_policy_version(name=name) is None:
        raise PolicyProblem(404, f"no policy {name!r}")
    try:
        wanted = sorted({check_label(label) for label in labels})
    except ValueError as exc:
        raise PolicyProblem(422, str(exc), key="labels") from exc
    if len(wanted) > MAX_LABELS_ASSIGNED:
        raise PolicyProblem(422, f"at most {MAX_LABELS_ASSIGNED} labels a policy", key="labels")
    if isinstance(priority, bool) or not isinstance(priority, int) or not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise PolicyProblem(422, f"priority is a whole number from {-MAX_PRIORITY} to {MAX_PRIORITY}", key="priority")
    before = tx.list_assignments()
    mine_before = sorted(a.label for a in before if a.policy_name == name)
    taken = {a.label: a.policy_name for a in before if a.label in wanted and a.policy_name != name}
    for label in mine_before:
        if label not in wanted:
            tx.delete_assignment(label)
    made = [Assignment(label, name, priority, actor, now_ns) for label in wanted]
    for assignment in made:
        tx.put_assignment(assignment)
    tx.append_audit(AuditEntry(now_ns, actor, "policy.assign", name,
                               {"labels": wanted, "before": mine_before, "priority": priority, "taken_from": taken}))
    return made


def labels_of(agent: AgentRecord) -> tuple[str, ...]:
    """The labels an agent carries (the fleet's, collector/fleet)."""
    labels: tuple[str, ...] = getattr(agent, "labels", ())
    return labels


def wanted_for(agent: AgentRecord, assignments: Sequence[Assignment] | Mapping[str, Assignment],
               latest: Mapping[str, PolicyVersion]) -> PolicyVersion | None:
    """The policy version an agent is to run (the newest of its assigned policy), or None."""
    if agent.revoked_at_ns is not None:
        return None
    return wanted_by_labels(labels_of(agent), assignments, latest)


def wanted_by_labels(labels: Iterable[str], assignments: Sequence[Assignment] | Mapping[str, Assignment],
                     latest: Mapping[str, PolicyVersion]) -> PolicyVersion | None:
    """The policy version an unrevoked agent with these labels is to run, or None."""
    chosen = resolve(labels, assignments)
    return None if chosen is None else latest.get(chosen.policy_name)


@dataclass(frozen=True)
class PolicySummary:
    """One policy on the list: its newest version, where it applies, how many agents run that version."""

    latest: PolicyVersion
    labels: tuple[str, ...]
    priority: int | None
    assigned_agents: int       # agents whose labels pick this policy now
    applied_latest: int        # ...of which report its newest version applied (same hash)
    refused_latest: int        # ...of which refused its newest version


def _applied(state: AgentPolicyState | None, version: PolicyVersion) -> bool:
    return (state is not None and state.applied_name == version.name and state.applied_version == version.version
            and state.applied_sha256 == version.sha256)


def _refused(state: AgentPolicyState | None, version: PolicyVersion) -> bool:
    return state is not None and state.refused_name == version.name and state.refused_version == version.version


def summaries(*, tx: _ViewTx) -> list[PolicySummary]:
    """Every policy with its newest version, labels and how far its newest version has reached."""
    latest = {v.name: v for v in tx.latest_policy_versions()}
    assignments = tx.list_assignments()
    states = {s.agent_id: s for s in tx.list_agent_policy_states()}
    counts: dict[str, list[int]] = {name: [0, 0, 0] for name in latest}
    index = by_label_of(assignments)
    for agent in tx.list_agents():
        wanted = wanted_for(agent, index, latest)
        if wanted is None:
            continue
        state = states.get(agent.agent_id)
        row = counts[wanted.name]
        row[0] += 1
        row[1] += _applied(state, wanted)
        row[2] += _refused(state, wanted)
    out = []
    for name, version in latest.items():
        mine = [a for a in assignments if a.policy_name == name]
        out.append(PolicySummary(version, tuple(a.label for a in mine), max((a.priority for a in mine), default=None),
                                 *counts[name]))
    return out


@dataclass(frozen=True)
class AgentPolicyView:
    """One agent's policy: what it should run, what it runs, what it refused."""

    agent_id: str
    assigned: PolicyVersion | None
    assigned_by_label: str | None
    state: AgentPolicyState | None
    applied_known: bool | None   # None: nothing applied reported; False: a version the collector never made
    in_sync: bool


def agent_view(*, tx: _ViewTx, agent_id: str) -> AgentPolicyView | None:
    """An agent's assigned, applied and refused policy; None if there is no such agent."""
    agent = tx.get_agent(agent_id)
    if agent is None:
        return None
    assignments = tx.list_assignments()
    latest = {v.name: v for v in tx.latest_policy_versions()}
    chosen = resolve(labels_of(agent), assignments) if agent.revoked_at_ns is None else None
    wanted = wanted_for(agent, assignments, latest)
    state = tx.get_agent_policy_state(agent_id)
    known: bool | None = None
    if state is not None and state.applied_name is not None and state.applied_source != LOCAL_SOURCE:
        found = (tx.get_policy_version(name=state.applied_name, version=state.applied_version)
                 if state.applied_version is not None else None)
        known = found is not None and found.sha256 == state.applied_sha256
    return AgentPolicyView(agent_id, wanted, None if chosen is None else chosen.label, state, known,
                           wanted is None or _applied(state, wanted))


# --- what agents report (the ingest path) -------------------------------------------------------------------------

def _text(value: Any, limit: int = 64) -> str | None:
    # no NUL: PostgreSQL's text refuses it, and that would fail every batch of the group's transaction
    text = value.replace("\x00", "")[:limit] if isinstance(value, str) else ""
    return text or None


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():  # numbers may travel as doubles (a Struct's)
        value = int(value)
    if isinstance(value, int) and 0 <= value < 2**63:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def said_in_status(attributes: Mapping[str, Any]) -> tuple[str | None, int | None, str | None]:
    """The (name, version, sha256) of the policy a heartbeat or agent.start says is in force."""
    return (_text(attributes.get("policy_name")), _number(attributes.get("policy_version")),
            _text(attributes.get("policy_sha256")))


def applied_of(state: AgentPolicyState) -> tuple[str | None, int | None, str | None]:
    """The (name, version, sha256) of the policy a state says is in force."""
    return state.applied_name, state.applied_version, state.applied_sha256


def reported(events: Sequence[StoredEvent], previous: AgentPolicyState | None, *, agent_id: str,
             now_ns: int) -> AgentPolicyState | None:
    """The agent's policy state after these events, or None if they change nothing. Pure."""
    state = previous or AgentPolicyState(agent_id, now_ns)
    for e in events:
        a = e.attributes
        if e.kind == "policy.applied":
            state = replace(state, applied_name=_text(a.get("name")), applied_version=_number(a.get("version")),
                            applied_sha256=_text(a.get("sha256")), applied_source=_text(a.get("source"), 16),
                            applied_at_ns=e.time_ns)
        elif e.kind == "policy.refused":
            state = replace(state, refused_name=_text(a.get("name")), refused_version=_number(a.get("version")),
                            refused_sha256=_text(a.get("sha256")),
                            refused_reason=_text(a.get("reason"), _MAX_REASON) or "no reason given",
                            refused_at_ns=e.time_ns)
        elif e.kind in STATUS_KINDS and "policy_name" in a:
            said = said_in_status(a)
            if said != applied_of(state):
                state = replace(state, applied_name=said[0], applied_version=said[1], applied_sha256=said[2],
                                applied_source=_text(a.get("policy_source"), 16), applied_at_ns=e.time_ns)
    if previous is not None and replace(state, updated_at_ns=previous.updated_at_ns) == previous:
        return None
    return replace(state, updated_at_ns=now_ns)


def record_reports(*, tx: _ReportTx, agent_id: str, events: Sequence[StoredEvent],
                   now_ns: int) -> AgentPolicyState | None:
    """Records what a stored batch says of the agent's policy, if anything new; returns the new state."""
    previous = tx.get_agent_policy_state(agent_id)
    state = reported(events, previous, agent_id=agent_id, now_ns=now_ns)
    if state is None:
        return None
    tx.put_agent_policy_state(state)
    refused = (state.refused_name, state.refused_version, state.refused_sha256)
    if state.refused_name is not None and (previous is None or refused != (
            previous.refused_name, previous.refused_version, previous.refused_sha256)):
        made = state.refused_version is not None and tx.get_policy_version(
            name=state.refused_name, version=state.refused_version) is not None
        # refusals of versions never made (a hostile agent's) fold into one alert per agent, not one per name
        which = f"{state.refused_name}|{state.refused_version}" if made else "unknown"
        raise_alert(tx=tx, rule="policy_refused", severity="medium", agent_id=agent_id, now_ns=now_ns,
                    last_event_ns=state.refused_at_ns, group_key=f"policy_refused|{agent_id}|{which}",
                    summary=(f"agent {agent_id} refused policy {state.refused_name} version "
                             f"{state.refused_version}: {state.refused_reason}; the policy it had stays in force"))
    return state
