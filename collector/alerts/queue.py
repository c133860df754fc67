"""The alert queue: what a filter means, bulk changes, and a false positive's suppression in one step.

Works inside the caller's transaction, like every service; audit rows are appended in it. A bulk
change writes one ``alert.status`` / ``alert.assign`` row per alert (each alert's history stays one
query on its id, the same as a single change), each naming the bulk request, plus one ``alert.bulk``
row that records the request itself (action, filter, how many matched, changed and were skipped).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence
from urllib.parse import parse_qsl, urlencode

from pydantic import ConfigDict, Field

from collector.alerts.inputs import CleanInput
from collector.alerts.models import Alert, AlertQuery, AlertStatus, SavedFilter, Severity, Sort, Suppression
from collector.alerts.service import OUTCOMES, AlertError, assign, move, suppress
from collector.audit.models import AuditEntry
from collector.detection.models import RULE_NAMES
from collector.domain.roles import allowed
from collector.privacy.service import user_of
from collector.storage.base import AlertArea, AlreadyExists, AuditArea, PeopleArea, PrivacyArea
from collector.web.timefmt import parse_rfc3339_ns

__all__ = ["ALL_RULES", "BULK_CAP", "ACTIONS", "QueueFilter", "filter_from_pairs", "query_string", "to_query",
           "parse_cursor", "BulkResult", "bulk_change", "check_assignee", "suppress_false_positive",
           "DEFAULT_SUPPRESSION_DAYS", "MAX_SUPPRESSION_DAYS", "save_filter", "delete_filter"]

# rules an alert may carry: the configurable ones and the delivery layer's
ALL_RULES: tuple[str, ...] = (*RULE_NAMES, "capture_gap", "spool_loss", "agent_silent", "agent_tamper",
                              "agent_malformed", "agent_clock_skew", "agent_epoch_reset", "store_tamper",
                              "certificate_expiring", "policy_refused")
BULK_CAP = 10_000
ACTIONS: tuple[str, ...] = ("acknowledge", "close", "reopen", "assign", "unassign")
_TO_STATUS = {"acknowledge": AlertStatus.ACKNOWLEDGED.value, "close": AlertStatus.CLOSED.value,
              "reopen": AlertStatus.OPEN.value}
DEFAULT_SUPPRESSION_DAYS, MAX_SUPPRESSION_DAYS = 30, 90
_DAY_NS = 86_400 * 1_000_000_000


class QueueFilter(CleanInput):
    """A filter of the queue as people and scripts give it: a pseudonym for the person, RFC 3339 times."""

    model_config = ConfigDict(extra="forbid")

    rule: list[str] = Field(default_factory=list, max_length=len(ALL_RULES))
    severity: list[str] = Field(default_factory=list, max_length=4)
    status: list[str] = Field(default_factory=list, max_length=3)
    user: str | None = Field(None, max_length=64, description="a pseudonym, e.g. P-7K3M9QX2PA")
    agent: str | None = Field(None, max_length=64)
    since: str | None = Field(None, max_length=64, description="raised at or after (RFC 3339)")
    until: str | None = Field(None, max_length=64, description="raised before (RFC 3339)")
    assignee: str | None = Field(None, max_length=128, description='"me", "none" or an analyst\'s user name')
    sort: str = Field(Sort.NEWEST.value, max_length=16)


_LISTS = ("rule", "severity", "status")
_SINGLE = ("user", "agent", "since", "until", "assignee", "sort")


def filter_from_pairs(pairs: Iterable[tuple[str, str]]) -> QueueFilter:
    """Reads a filter from query-string pairs (repeated keys or commas for lists; unknown keys ignored)."""
    lists: dict[str, list[str]] = {k: [] for k in _LISTS}
    single: dict[str, str] = {}
    for key, value in pairs:
        value = value.strip()
        if key in lists:
            lists[key] += [v.strip() for v in value.split(",") if v.strip()]
        elif key in _SINGLE and value:
            single[key] = value
    try:
        return QueueFilter(**{k: list(dict.fromkeys(v)) for k, v in lists.items()}, **single)
    except ValueError as exc:
        raise AlertError(400, f"invalid filter: {_first_error(exc)}") from exc


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', 'invalid')}"
    return str(exc)


def query_string(f: QueueFilter) -> str:
    """The filter as the /alerts query string (canonical: what a saved filter keeps)."""
    pairs: list[tuple[str, str]] = [(k, v) for k in _LISTS for v in getattr(f, k)]
    pairs += [(k, getattr(f, k)) for k in _SINGLE if getattr(f, k) and not (k == "sort" and f.sort == "newest")]
    return urlencode(pairs)


class _QueryTx(PrivacyArea, Protocol):
    """What reading a filter needs."""


def to_query(f: QueueFilter, *, tx: _QueryTx, me: str) -> AlertQuery | None:
    """What the filter means for the store; None when it can match nothing (a pseudonym nobody has)."""
    for name, allowed_values in (("rule", ALL_RULES), ("severity", tuple(s.value for s in Severity)),
                                 ("status", tuple(s.value for s in AlertStatus))):
        wrong = [v for v in getattr(f, name) if v not in allowed_values]
        if wrong:
            raise AlertError(400, f"unknown {name} {wrong[0][:64]!r}; known: {', '.join(allowed_values)}")
    if f.sort not in {s.value for s in Sort}:
        raise AlertError(400, f"unknown sort {f.sort[:16]!r}; known: {', '.join(s.value for s in Sort)}")
    since = until = None
    try:
        since = parse_rfc3339_ns(f.since) if f.since else None
        until = parse_rfc3339_ns(f.until) if f.until else None
    except ValueError as exc:
        raise AlertError(400, str(exc)) from exc
    user = None
    if f.user:
        user = user_of(tx=tx, pseudonym=f.user)
        if user is None:
            return None
    assignee = {"me": me, "none": ""}.get(f.assignee or "", f.assignee)
    return AlertQuery(rules=tuple(f.rule), severities=tuple(f.severity), statuses=tuple(f.status), user=user,
                      agent_id=f.agent, since_ns=since, until_ns=until, assignee=assignee, sort=f.sort)


def parse_cursor(text: str | None, sort: str) -> tuple[int, int] | None:
    """Reads a queue cursor ("id", or "key_id" for the severity and evidence sorts); 400 if it is not one."""
    if not text:
        return None
    parts = text.split("_")
    keyed = sort in (Sort.SEVERITY.value, Sort.EVIDENCE.value)
    # ASCII digits only: str.isdigit() also accepts "¹", which int() refuses
    if (len(parts) != (2 if keyed else 1)
            or not all(p and len(p) <= 19 and p.isascii() and p.isdigit() and int(p) < 2**63 for p in parts)):
        raise AlertError(400, f"invalid cursor {text[:40]!r}: pass back next_cursor unchanged, with the same sort")
    return (int(parts[0]), int(parts[-1]))


class _ChangeTx(AlertArea, AuditArea, PeopleArea, Protocol):
    """What changing alerts needs."""


def check_assignee(*, tx: PeopleArea, assignee: str) -> str:
    """An assignee must be an enabled account that may triage alerts."""
    user = tx.get_user(assignee)
    if user is None or user.disabled or not allowed(user.role, "alerts:triage"):
        raise AlertError(422, f"{assignee[:128]!r} is not an analyst who may triage alerts")
    return assignee


def suppress_false_positive(*, tx: _ChangeTx, alert: Alert, owner: str, reason: str, now_ns: int,
                            days: int = DEFAULT_SUPPRESSION_DAYS, path_glob: str | None = None) -> Suppression:
    """A time-boxed suppression of the alert's rule for the alert's person, owned by the analyst."""
    if not alert.user:
        raise AlertError(422, "this alert names no person: a suppression for everyone is made at /api/v1/suppressions")
    if not 1 <= days <= MAX_SUPPRESSION_DAYS:
        raise AlertError(422, f"a suppression lasts 1 to {MAX_SUPPRESSION_DAYS} days")
    return suppress(tx=tx, rule=alert.rule, owner=owner, reason=reason, now_ns=now_ns,
                    expires_at_ns=now_ns + days * _DAY_NS, user=alert.user, path_glob=path_glob or None,
                    known_rules=ALL_RULES)


@dataclass(frozen=True)
class BulkResult:
    """What a bulk change did."""

    bulk_id: str
    action: str
    matched: int
    changed: int
    skipped: tuple[tuple[int, str], ...]
    suppressions: tuple[int, ...] = ()


def bulk_change(*, tx: _ChangeTx, alert_ids: Sequence[int], action: str, actor: str, now_ns: int,
                outcome: str | None = None, assignee: str | None = None, request: dict[str, object] | None = None,
                suppress_days: int | None = None, suppress_reason: str | None = None) -> BulkResult:
    """Applies one action to many alerts in the caller's transaction; alerts it cannot apply to are skipped."""
    if action not in ACTIONS:
        raise AlertError(400, f"unknown action {action[:32]!r}; actions are {', '.join(ACTIONS)}")
    if len(alert_ids) > BULK_CAP:
        raise AlertError(413, f"{len(alert_ids)} alerts: at most {BULK_CAP} per request; narrow the filter")
    if action == "close" and outcome not in OUTCOMES:
        raise AlertError(422, f"closing needs a closure reason: {', '.join(OUTCOMES)}")
    if action != "close" and outcome is not None:
        raise AlertError(400, "a closure reason is given when closing")
    if suppress_days is not None and (action != "close" or outcome != "false_positive"):
        raise AlertError(422, "a suppression is made when closing as false_positive")
    if suppress_days is not None and not (suppress_reason or "").strip():
        raise AlertError(422, "a suppression needs a reason")
    if action == "assign":
        check_assignee(tx=tx, assignee=assignee or "")
    bulk_id = uuid.uuid4().hex[:16]
    found = tx.get_alerts(alert_ids)
    present = {a.id for a in found}
    skipped: list[tuple[int, str]] = [(i, "no such alert") for i in dict.fromkeys(alert_ids) if i not in present]
    changed: list[Alert] = []
    opened: set[str] = set()  # groups this request opens an alert of: one open alert a group
    for alert in found:
        try:
            if action in _TO_STATUS:
                if alert.status == _TO_STATUS[action]:
                    skipped.append((alert.id or 0, f"already {alert.status}"))
                    continue
                if alert.group_key in opened and _TO_STATUS[action] == AlertStatus.OPEN.value:
                    skipped.append((alert.id or 0, "another alert of the same incident is reopened by this request"))
                    continue
                changed.append(move(tx=tx, alert=alert, status=_TO_STATUS[action], actor=actor, now_ns=now_ns,
                                    outcome=outcome, batch=bulk_id, write=False))
                if changed[-1].status == AlertStatus.OPEN.value and alert.group_key is not None:
                    opened.add(alert.group_key)
            else:
                target = assignee if action == "assign" else None
                if alert.assignee == target:
                    skipped.append((alert.id or 0, "already assigned so"))
                    continue
                changed.append(assign(tx=tx, alert=alert, assignee=target, actor=actor, now_ns=now_ns, batch=bulk_id,
                                      write=False))
        except AlertError as exc:
            skipped.append((alert.id or 0, str(exc)))
    tx.update_alerts(changed)  # one statement per thousand, not one per alert
    made: list[int] = []
    if suppress_days is not None:
        scopes = dict.fromkeys((a.rule, a.user) for a in changed if a.user)
        for rule, user in scopes:
            one = next(a for a in changed if (a.rule, a.user) == (rule, user))
            made.append(suppress_false_positive(tx=tx, alert=one, owner=actor, reason=suppress_reason or "",
                                                now_ns=now_ns, days=suppress_days).id or 0)
    tx.append_audit(AuditEntry(now_ns, actor, "alert.bulk", bulk_id, {
        "action": action, "outcome": outcome, "assignee": assignee, "request": request or {},
        "matched": len(alert_ids), "changed": len(changed), "skipped": len(skipped), "suppressions": made}))
    return BulkResult(bulk_id, action, len(alert_ids), len(changed), tuple(skipped), tuple(made))


class _FilterTx(AlertArea, AuditArea, PrivacyArea, Protocol):
    """What keeping filters needs."""


def save_filter(*, tx: _FilterTx, owner: str, name: str, query: str, now_ns: int) -> SavedFilter:
    """Checks and keeps a named filter (its query in canonical form); audited."""
    name = " ".join(name.split())
    if not name:
        raise AlertError(422, "a saved filter needs a name")
    f = filter_from_pairs(parse_qsl(query.lstrip("?"), keep_blank_values=False))
    to_query(f, tx=tx, me=owner)  # refuses what the queue would refuse
    try:
        made = tx.add_saved_filter(SavedFilter(owner, name[:100], query_string(f), now_ns))
    except AlreadyExists as exc:
        raise AlertError(409, f"you already have a filter named {name[:100]!r}") from exc
    tx.append_audit(AuditEntry(now_ns, owner, "alert_filter.save", str(made.id), {"name": made.name,
                                                                                  "query": made.query}))
    return made


def delete_filter(*, tx: _FilterTx, owner: str, filter_id: int, now_ns: int) -> None:
    """Deletes one of the owner's saved filters; audited."""
    gone = tx.delete_saved_filter(filter_id=filter_id, owner=owner)
    if gone is None:
        raise AlertError(404, f"you have no saved filter {filter_id}")
    tx.append_audit(AuditEntry(now_ns, owner, "alert_filter.delete", str(filter_id), {"name": gone.name,
                                                                                      "query": gone.query}))
