"""Alerts: the JSON API of the queue (filter, sort, page, count, group, save filters, assign, bulk),
an alert's detail and evidence, and suppressions. The pages are in pages.py."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import Field

from collector.alerts.detail import agent_health, evidence_page, masked_alerts
from collector.alerts.inputs import CleanInput
from collector.alerts.models import Alert, SavedFilter, Suppression
from collector.alerts.queue import (ACTIONS, ALL_RULES, BULK_CAP, DEFAULT_SUPPRESSION_DAYS, MAX_SUPPRESSION_DAYS,
                                    QueueFilter, bulk_change, check_assignee, delete_filter, filter_from_pairs,
                                    parse_cursor, query_string, save_filter, suppress_false_positive, to_query)
from collector.alerts.schemas import (AlertOut, AlertPage, BulkOut, ChangedOut, CountsOut, DetailOut, EvidencePage,
                                      GroupPage, SavedFilterOut, SavedFilterPage, SuppressionOut, SuppressionPage)
from collector.alerts.service import AlertError, assign, lift, move, suppress
from collector.people.models import User
from collector.privacy.codes import parse as parse_pseudonym
from collector.privacy.service import pseudonyms_of, user_of
from collector.storage.base import Transaction
from collector.web.deps import Services, page_json, require, services
from collector.web.timefmt import format_ns, parse_rfc3339_ns

__all__ = ["router", "ALL_RULES", "queue_filter", "load_alert", "detail_json", "RowId"]

router = APIRouter()
# an id the store can hold (signed 64-bit): a larger one is a 400, never a driver's overflow
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _http(exc: AlertError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


def queue_filter(
    rule: list[str] = Query([], max_length=64), severity: list[str] = Query([], max_length=16),
    status: list[str] = Query([], max_length=16),
    user: str | None = Query(None, max_length=64, description="a pseudonym, e.g. P-7K3M9QX2PA"),
    agent: str | None = Query(None, max_length=64), since: str | None = Query(None, max_length=64),
    until: str | None = Query(None, max_length=64),
    assignee: str | None = Query(None, max_length=128, description='"me", "none" or a user name'),
    sort: str = Query("newest", max_length=16, description="newest, oldest, severity or evidence"),
) -> QueueFilter:
    """The queue filter of a request's query string."""
    try:
        pairs = [*(("rule", v) for v in rule), *(("severity", v) for v in severity),
                 *(("status", v) for v in status)]
        pairs += [(k, v) for k, v in (("user", user), ("agent", agent), ("since", since), ("until", until),
                                      ("assignee", assignee), ("sort", sort)) if v]
        return filter_from_pairs(pairs)
    except AlertError as exc:
        raise _http(exc) from exc


class SuppressionRequest(CleanInput):
    """A time-boxed suppression: which rule, for whom or which paths, why, until when."""

    rule: str = Field(..., max_length=64)
    user: str | None = Field(None, max_length=128, description="a pseudonym (or a user name)")
    path: str | None = Field(None, max_length=1024, description="a glob, e.g. /srv/finance/exports/*")
    reason: str = Field(..., min_length=1, max_length=2000)
    expires_at: str = Field(..., max_length=64, description="RFC 3339; at most 90 days ahead")


class FalsePositiveSuppression(CleanInput):
    """Closing as false_positive may suppress the alert's rule for its person, for a while."""

    reason: str = Field(..., min_length=1, max_length=2000)
    days: int = Field(DEFAULT_SUPPRESSION_DAYS, ge=1, le=MAX_SUPPRESSION_DAYS)
    path: str | None = Field(None, max_length=1024, description="optionally only paths matching this glob")


class StatusChange(CleanInput):
    """A request to move an alert to another status; closing says why (the closure reason)."""

    status: str = Field(..., pattern="^(open|acknowledged|closed)$")
    outcome: str | None = Field(None, pattern="^(true_positive|false_positive|benign|duplicate)$")
    suppress: FalsePositiveSuppression | None = None


class AssignRequest(CleanInput):
    """Who is to look into an alert: "me", an analyst's user name, or null for nobody."""

    assignee: str | None = Field(None, max_length=128)


class BulkRequest(CleanInput):
    """One action on a selection (ids) or on everything a filter matches, at most 10,000 alerts."""

    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(None, description=f"at most {BULK_CAP}")
    filter: QueueFilter | None = None
    action: str = Field(..., pattern="^(" + "|".join(ACTIONS) + ")$")
    outcome: str | None = Field(None, pattern="^(true_positive|false_positive|benign|duplicate)$")
    assignee: str | None = Field(None, max_length=128, description='for "assign": "me" or a user name')
    suppress: FalsePositiveSuppression | None = None
    dry_run: bool = Field(False, description="only count what would change")
    expected: int | None = Field(None, ge=0, description="refuse (409) unless the filter still matches this many")


class SavedFilterRequest(CleanInput):
    """A filter to keep under a name: the query string of /alerts (e.g. status=open&rule=usb_exfiltration)."""

    name: str = Field(..., min_length=1, max_length=100)
    query: str = Field("", max_length=2000)


def suppression_json(s: Suppression, code: str | None) -> dict[str, Any]:
    """Shapes a suppression for the API; the person by pseudonym."""
    return {"id": s.id, "rule": s.rule, "user": code, "path": s.path_glob, "owner": s.owner, "reason": s.reason,
            "created_at": format_ns(s.created_at_ns), "expires_at": format_ns(s.expires_at_ns),
            "lifted_at": format_ns(s.lifted_at_ns) if s.lifted_at_ns else None, "suppressed_events": s.hits,
            "last_suppressed_at": format_ns(s.last_hit_ns) if s.last_hit_ns else None}


def saved_filter_json(f: SavedFilter) -> dict[str, Any]:
    """Shapes a saved filter for the API."""
    return {"id": f.id, "name": f.name, "query": f.query, "created_at": format_ns(f.created_at_ns),
            "url": "/alerts" + (f"?{f.query}" if f.query else "")}


@router.get("/api/v1/alerts", response_model=AlertPage)
def list_alerts(
    f: QueueFilter = Depends(queue_filter),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=40),
    who: User = Depends(require("alerts:read")),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Lists alerts matching the filter in the chosen order, a page at a time; people by pseudonym."""
    try:
        after = parse_cursor(cursor, f.sort)
        with svc.store.read() as tx:
            q = to_query(f, tx=tx, me=who.username)
            if q is None:
                return page_json([], None)
            page = tx.query_alerts(q, after=after, limit=limit)
            items = masked_alerts(tx=tx, alerts=page.items)
    except AlertError as exc:
        raise _http(exc) from exc
    return page_json(items, page.next_cursor)


@router.get("/api/v1/alerts/counts", response_model=CountsOut)
def count_alerts(f: QueueFilter = Depends(queue_filter), who: User = Depends(require("alerts:read")),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    """How many alerts the filter matches, in all and by status, rule and severity (each ignoring its own facet)."""
    try:
        with svc.store.read() as tx:
            return counts_json(tx, f, who.username)
    except AlertError as exc:
        raise _http(exc) from exc


def counts_json(tx: Transaction, f: QueueFilter, me: str) -> dict[str, Any]:
    """The counts of a filter; a facet's counts ignore that facet's own choice, so each shows every option."""
    q = to_query(f, tx=tx, me=me)
    if q is None:
        return {"total": 0, "by_status": {}, "by_rule": {}, "by_severity": {}}
    by_status = tx.count_alerts_by(replace(q, statuses=()), field="status")
    return {"total": sum(n for s, n in by_status.items() if not q.statuses or s in q.statuses),
            "by_status": by_status, "by_rule": tx.count_alerts_by(replace(q, rules=()), field="rule"),
            "by_severity": tx.count_alerts_by(replace(q, severities=()), field="severity")}


@router.get("/api/v1/alerts/groups", response_model=GroupPage)
def group_alerts(f: QueueFilter = Depends(queue_filter), limit: int = Query(50, ge=1, le=500),
                 cursor: str | None = Query(None, max_length=12), who: User = Depends(require("alerts:read")),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    """One row per person (by pseudonym) with their alert counts under the filter, most alerts first."""
    try:
        offset = parse_cursor(cursor, "newest")
        with svc.store.read() as tx:
            return groups_json(tx, f, who.username, offset=offset[1] if offset else 0, limit=limit)
    except AlertError as exc:
        raise _http(exc) from exc


def groups_json(tx: Transaction, f: QueueFilter, me: str, *, offset: int, limit: int) -> dict[str, Any]:
    """A page of the queue grouped by person; each row links to that person's filtered queue."""
    q = to_query(f, tx=tx, me=me)
    rows = [] if q is None else list(tx.group_alerts_by_user(q, offset=offset, limit=limit + 1))
    codes = pseudonyms_of(tx=tx, user_names=[g.user for g in rows[:limit]])
    items = []
    for g in rows[:limit]:
        link = query_string(f.model_copy(update={"user": codes[g.user]}))
        items.append({"user": codes[g.user], "total": g.total, "open": g.open, "acknowledged": g.acknowledged,
                      "closed": g.closed, "severe": g.severe, "last_created_at": format_ns(g.last_created_ns),
                      "url": f"/alerts?{link}"})
    return page_json(items, str(offset + limit) if len(rows) > limit else None)


@router.get("/api/v1/alerts/filters", response_model=SavedFilterPage)
def list_filters(who: User = Depends(require("alerts:read")), svc: Services = Depends(services)) -> dict[str, Any]:
    """The caller's saved filters, by name."""
    with svc.store.read() as tx:
        return page_json([saved_filter_json(x) for x in tx.list_saved_filters(who.username)], None)


@router.post("/api/v1/alerts/filters", status_code=201, response_model=SavedFilterOut)
def create_filter(body: SavedFilterRequest, who: User = Depends(require("alerts:triage")),
                  svc: Services = Depends(services)) -> dict[str, Any]:
    """Keeps the caller's filter under a name (409 if the name is taken)."""
    try:
        with svc.store.transaction() as tx:
            made = save_filter(tx=tx, owner=who.username, name=body.name, query=body.query, now_ns=time.time_ns())
    except AlertError as exc:
        raise _http(exc) from exc
    return saved_filter_json(made)


@router.delete("/api/v1/alerts/filters/{filter_id}")
def remove_filter(filter_id: RowId, who: User = Depends(require("alerts:triage")),
                  svc: Services = Depends(services)) -> dict[str, Any]:
    """Deletes one of the caller's saved filters."""
    try:
        with svc.store.transaction() as tx:
            delete_filter(tx=tx, owner=who.username, filter_id=filter_id, now_ns=time.time_ns())
    except AlertError as exc:
        raise _http(exc) from exc
    return {"id": filter_id, "deleted": True}


def run_bulk(tx: Transaction, body: BulkRequest, who: User, now_ns: int) -> dict[str, Any]:
    """Resolves a bulk request's alerts (ids or filter), checks the cap, and applies it (or only counts)."""
    if (body.ids is None) == (body.filter is None):
        raise AlertError(422, 'give either "ids" or "filter"')
    if body.ids is not None:
        if len(body.ids) > BULK_CAP:
            raise AlertError(413, f"{len(body.ids)} ids: at most {BULK_CAP} per request")
        ids = list(dict.fromkeys(body.ids))
        request: dict[str, object] = {"ids": len(ids)}
    else:
        assert body.filter is not None
        q = to_query(body.filter, tx=tx, me=who.username)
        ids = [] if q is None else list(tx.alert_ids_matching(q, limit=BULK_CAP + 1))
        if len(ids) > BULK_CAP:
            total = counts_json(tx, body.filter, who.username)["total"]
            raise AlertError(413, f"{total} alerts match: at most {BULK_CAP} per request; narrow the filter")
        request = {"filter": query_string(body.filter)}
    if body.expected is not None and body.expected != len(ids):
        raise AlertError(409, f"{len(ids)} alerts match now, not the {body.expected} confirmed: confirm again")
    if body.dry_run:
        return {"dry_run": True, "action": body.action, "matched": len(ids), "changed": 0, "skipped": []}
    assignee = body.assignee
    if body.action == "assign":
        assignee = who.username if (assignee or "me") == "me" else check_assignee(tx=tx, assignee=assignee or "")
    result = bulk_change(tx=tx, alert_ids=ids, action=body.action, actor=who.username, now_ns=now_ns,
                         outcome=body.outcome, assignee=assignee, request=request,
                         suppress_days=body.suppress.days if body.suppress else None,
                         suppress_reason=body.suppress.reason if body.suppress else None)
    return {"dry_run": False, "bulk": result.bulk_id, "action": result.action, "matched": result.matched,
            "changed": result.changed, "skipped": [{"id": i, "reason": r} for i, r in result.skipped[:100]],
            "skipped_count": len(result.skipped), "suppressions": list(result.suppressions)}


@router.post("/api/v1/alerts/bulk", response_model=BulkOut)
def bulk(body: BulkRequest, who: User = Depends(require("alerts:triage")),
         svc: Services = Depends(services)) -> dict[str, Any]:
    """Acknowledges, closes (with a closure reason), reopens, assigns or unassigns a selection or everything a
    filter matches, in one transaction, each alert's change audited; ``dry_run`` only counts. 413 over 10,000."""
    try:
        with svc.store.transaction() as tx:
            return run_bulk(tx, body, who, time.time_ns())
    except AlertError as exc:
        raise _http(exc) from exc


def load_alert(tx: Transaction, alert_id: int) -> Alert:
    """An alert without its evidence; 404 if there is none."""
    found = tx.get_alerts([alert_id])
    if not found:
        raise AlertError(404, f"no alert {alert_id}")
    return found[0]


def detail_json(tx: Transaction, alert: Alert, *, limit: int = 100) -> dict[str, Any]:
    """An alert with its first page of evidence, the agent's health around it and the cases that hold it."""
    items, next_cursor = evidence_page(tx=tx, alert=alert, after=None, limit=limit)
    stored = tx.count_stored_evidence(alert.id or 0)
    first = tx.evidence_events(alert_id=alert.id or 0, after=None, limit=1)
    first_ns = first[0].time_ns if first else alert.created_at_ns
    [shaped] = masked_alerts(tx=tx, alerts=[alert])
    return {**shaped, "first_event_at": format_ns(first_ns),
            "evidence": {"items": items, "next_cursor": next_cursor, "stored": stored,
                         "no_longer_stored": max(alert.evidence_count - stored, 0)},
            "agent": agent_health(tx=tx, alert=alert, first_ns=first_ns),
            "cases": list(tx.cases_for_alert(alert.id or 0))}


@router.get("/api/v1/alerts/{alert_id}", response_model=DetailOut)
def get_alert(alert_id: RowId, who: User = Depends(require("alerts:read")),
              svc: Services = Depends(services)) -> dict[str, Any]:
    """An alert's detail: the summary, the outcome, the first page of its evidence timeline, the agent's health
    in that window and the cases holding it."""
    try:
        with svc.store.read() as tx:
            return detail_json(tx, load_alert(tx, alert_id))
    except AlertError as exc:
        raise _http(exc) from exc


@router.get("/api/v1/alerts/{alert_id}/evidence", response_model=EvidencePage)
def get_evidence(alert_id: RowId, limit: int = Query(100, ge=1, le=1000), cursor: str | None = Query(None, max_length=40),
                 who: User = Depends(require("alerts:read")), svc: Services = Depends(services)) -> dict[str, Any]:
    """An alert's evidence events in time order, a page at a time: who, which file, which process, where it went."""
    try:
        after = parse_cursor(cursor, "severity")
        with svc.store.read() as tx:
            items, next_cursor = evidence_page(tx=tx, alert=load_alert(tx, alert_id), after=after, limit=limit)
    except AlertError as exc:
        raise _http(exc) from exc
    return page_json(items, next_cursor)


def change_one(tx: Transaction, *, alert_id: int, status: str, outcome: str | None, who: User, now_ns: int,
               fp: FalsePositiveSuppression | None = None) -> tuple[Alert, Suppression | None]:
    """Moves one alert; closing as false_positive may also suppress its rule for its person (one transaction)."""
    if fp is not None and (status != "closed" or outcome != "false_positive"):
        raise AlertError(422, "a suppression is made when closing as false_positive")
    moved = move(tx=tx, alert=load_alert(tx, alert_id), status=status, actor=who.username, now_ns=now_ns,
                 outcome=outcome)
    made = None
    if fp is not None:
        made = suppress_false_positive(tx=tx, alert=moved, owner=who.username, reason=fp.reason, now_ns=now_ns,
                                       days=fp.days, path_glob=fp.path)
    return moved, made


@router.post("/api/v1/alerts/{alert_id}/status", response_model=ChangedOut)
def change_status(alert_id: RowId, change: StatusChange, who: User = Depends(require("alerts:triage")),
                  svc: Services = Depends(services)) -> dict[str, Any]:
    """Moves an alert along its lifecycle; closing needs a closure reason (422 without); closing as
    false_positive with ``suppress`` also makes a time-boxed suppression owned by the caller. Audited."""
    try:
        with svc.store.transaction() as tx:
            moved, made = change_one(tx, alert_id=alert_id, status=change.status, outcome=change.outcome, who=who,
                                     now_ns=time.time_ns(), fp=change.suppress)
            [shaped] = masked_alerts(tx=tx, alerts=[moved])
            if made is not None:
                shaped["suppression"] = suppression_json(made, shaped["user"])
    except AlertError as exc:
        raise _http(exc) from exc
    return shaped


@router.post("/api/v1/alerts/{alert_id}/assign", response_model=AlertOut)
def assign_alert(alert_id: RowId, body: AssignRequest, who: User = Depends(require("alerts:triage")),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    """Assigns an alert to the caller ("me"), to a named analyst, or to nobody (null). Audited."""
    try:
        with svc.store.transaction() as tx:
            target = body.assignee
            if target == "me":
                target = who.username
            elif target:
                check_assignee(tx=tx, assignee=target)
            moved = assign(tx=tx, alert=load_alert(tx, alert_id), assignee=target or None, actor=who.username,
                           now_ns=time.time_ns())
            [shaped] = masked_alerts(tx=tx, alerts=[moved])
    except AlertError as exc:
        raise _http(exc) from exc
    return shaped


def _suppression_user(tx: Transaction, text: str | None) -> str | None:
    if not text:
        return None
    if parse_pseudonym(text) is not None:
        found = user_of(tx=tx, pseudonym=text)
        if found is None:
            raise AlertError(404, f"no person has the pseudonym {text[:40]!r}")
        return found
    return text


@router.post("/api/v1/suppressions", status_code=201, response_model=SuppressionOut)
def create_suppression(body: SuppressionRequest, who: User = Depends(require("alerts:triage")),
                       svc: Services = Depends(services)) -> dict[str, Any]:
    """Suppresses a rule for a person and/or paths until an expiry; the caller owns it. Audited."""
    try:
        expires = parse_rfc3339_ns(body.expires_at)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    try:
        with svc.store.transaction() as tx:
            user = _suppression_user(tx, body.user)
            made = suppress(tx=tx, rule=body.rule, owner=who.username, reason=body.reason, now_ns=time.time_ns(),
                            expires_at_ns=expires, user=user, path_glob=body.path, known_rules=ALL_RULES)
            codes = pseudonyms_of(tx=tx, user_names=[user or ""])
    except AlertError as exc:
        raise _http(exc) from exc
    return suppression_json(made, codes.get(user or ""))


@router.get("/api/v1/suppressions", response_model=SuppressionPage)
def list_suppressions(who: User = Depends(require("alerts:read")), svc: Services = Depends(services)) -> dict[str, Any]:
    """Lists suppressions, newest first, with how many events each kept from alerting; people by pseudonym."""
    with svc.store.read() as tx:
        found = tx.list_suppressions()
        codes = pseudonyms_of(tx=tx, user_names=[s.user or "" for s in found])
    return page_json([suppression_json(s, codes.get(s.user or "")) for s in found], None)


@router.post("/api/v1/suppressions/{suppression_id}/lift")
def lift_suppression(suppression_id: RowId, who: User = Depends(require("alerts:triage")),
                     svc: Services = Depends(services)) -> dict[str, Any]:
    """Ends a suppression now. Audited."""
    with svc.store.transaction() as tx:
        done = lift(tx=tx, suppression_id=suppression_id, actor=who.username, now_ns=time.time_ns())
    if not done:
        raise HTTPException(404, f"no suppression {suppression_id} in force")
    return {"id": suppression_id, "lifted": True}
