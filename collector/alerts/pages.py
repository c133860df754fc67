"""The alert pages: the queue at /alerts and an alert's detail at /alerts/{id}, with plain HTML forms
that post and redirect (303). They call the same service functions as the API (views.py)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from collector.alerts.detail import evidence_page, masked_alerts
from collector.alerts.inputs import refuse_controls
from collector.alerts.labels import (ACTION_LABELS, EVENT_KIND_LABELS, LIVENESS_LABELS, MATCH_LABELS, OUTCOME_LABELS,
                                     RULE_LABELS, SORT_LABELS)
from collector.alerts.models import AlertStatus, Severity, Sort
from collector.alerts.queue import (ALL_RULES, BULK_CAP, DEFAULT_SUPPRESSION_DAYS, MAX_SUPPRESSION_DAYS, QueueFilter,
                                    check_assignee, delete_filter, filter_from_pairs, parse_cursor, query_string,
                                    save_filter, to_query)
from collector.alerts.service import OUTCOMES, AlertError, assign
from collector.alerts.views import (BulkRequest, FalsePositiveSuppression, change_one, counts_json, detail_json,
                                    RowId, groups_json, load_alert, run_bulk)
from collector.domain.roles import allowed
from collector.people.models import User
from collector.privacy.service import PrivacyError, pseudonym_of, reveal
from collector.storage.base import Transaction
from collector.web.deps import Services, require_page, services
from collector.web.templating import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)  # pages: the API (views.py) is what /openapi.json describes
PAGE = 50
_NOTICE_KEYS = ("changed", "skipped", "suppressed")


def _labels() -> dict[str, Any]:
    return {"rule_labels": RULE_LABELS, "outcome_labels": OUTCOME_LABELS, "kind_labels": EVENT_KIND_LABELS,
            "sort_labels": SORT_LABELS, "action_labels": ACTION_LABELS, "match_labels": MATCH_LABELS,
            "liveness_labels": LIVENESS_LABELS,
            "all_rules": ALL_RULES, "severities": [s.value for s in Severity],
            "statuses": [s.value for s in AlertStatus], "sorts": [s.value for s in Sort], "outcomes": OUTCOMES,
            "bulk_cap": BULK_CAP, "default_days": DEFAULT_SUPPRESSION_DAYS, "max_days": MAX_SUPPRESSION_DAYS}


def _notice(request: Request) -> dict[str, int]:
    out = {}
    for key in _NOTICE_KEYS:
        value = request.query_params.get(key, "")
        if value.isascii() and value.isdigit() and len(value) < 7:
            out[key] = int(value)
    return out


def _controls(request: Request, user: User, form: FormData) -> Response | None:
    """A 422 page when a form field holds a control character (such as NUL), else None."""
    try:
        refuse_controls([str(v) for _, v in form.multi_items()], "form")
    except ValueError as exc:
        return _problem(request, user, AlertError(422, str(exc)), "/alerts")
    return None


def _problem(request: Request, user: User, exc: AlertError | PrivacyError, back: str) -> Response:
    return render(request, "alert_problem.html", {"status": exc.status, "reason": str(exc), "back": back},
                  user=user, status_code=exc.status)


@router.get("/alerts", response_class=HTMLResponse)
def queue_page(request: Request, user: User = Depends(require_page("alerts:read")),
               svc: Services = Depends(services)) -> Response:
    """The queue: filters, counts per status and rule, a page of alerts or one row per person, saved filters."""
    pairs = list(request.query_params.multi_items())
    try:
        f = filter_from_pairs(pairs)
        grouped = request.query_params.get("group") == "user"
        cursor = request.query_params.get("cursor") or None
        after = parse_cursor(cursor, "newest" if grouped else f.sort)
        with svc.store.read() as tx:
            q = to_query(f, tx=tx, me=user.username)
            counts = counts_json(tx, f, user.username)
            groups = groups_json(tx, f, user.username, offset=after[1] if after else 0, limit=PAGE) if grouped else None
            page = tx.query_alerts(q, after=after, limit=PAGE) if q is not None and not grouped else None
            alerts = masked_alerts(tx=tx, alerts=page.items) if page else []
            saved = tx.list_saved_filters(user.username)
    except AlertError as exc:
        return _problem(request, user, exc, "/alerts")
    qs = query_string(f)
    next_cursor = (groups or {}).get("next_cursor") if grouped else (page.next_cursor if page else None)
    return render(request, "alerts.html", {
        **_labels(), "f": f, "qs": qs, "grouped": grouped, "alerts": alerts, "groups": (groups or {}).get("items", []),
        "counts": counts, "saved": saved, "cursor": cursor, "notice": _notice(request),
        "next_url": f"/alerts?{urlencode([*parse_qsl(qs), *([('group', 'user')] if grouped else []), ('cursor', next_cursor)])}"
        if next_cursor else None,
        "first_url": f"/alerts?{urlencode([*parse_qsl(qs), *([('group', 'user')] if grouped else [])])}",
        "facet_url": lambda key, value: "/alerts?" + query_string(f.model_copy(update={key: [value] if value else []})),
        "group_url": "/alerts?" + urlencode([*parse_qsl(qs), ("group", "user")]),
    }, user=user)


def _form_filter(form: FormData) -> QueueFilter:
    return filter_from_pairs(parse_qsl(str(form.get("filter") or ""), keep_blank_values=False))


def _ids(form: FormData) -> list[int]:
    out = []
    for value in form.getlist("ids"):
        text = str(value)
        if not (text.isascii() and text.isdigit() and len(text) < 19):
            raise AlertError(400, f"invalid alert id {text[:20]!r}")
        out.append(int(text))
    return out


def _count(value: object) -> int | None:
    text = str(value or "")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 9 else None


def _suppression_of(form: FormData) -> FalsePositiveSuppression | None:
    if form.get("suppress") != "yes":
        return None
    days = str(form.get("days") or DEFAULT_SUPPRESSION_DAYS)
    if not (days.isascii() and days.isdigit() and 1 <= int(days) <= MAX_SUPPRESSION_DAYS):
        raise AlertError(422, f"a suppression lasts 1 to {MAX_SUPPRESSION_DAYS} days")
    reason = " ".join(str(form.get("suppress_reason") or "").split())
    if not reason or len(reason) > 2000:
        raise AlertError(422, "a suppression needs a reason (at most 2000 characters)")
    path = str(form.get("path") or "").strip() or None
    if path is not None and len(path) > 1024:
        raise AlertError(422, "a path glob has at most 1024 characters")
    return FalsePositiveSuppression(reason=reason, days=int(days), path=path)


@router.post("/alerts/bulk", response_class=HTMLResponse)
async def bulk_form(request: Request, user: User = Depends(require_page("alerts:triage")),
                    svc: Services = Depends(services)) -> Response:
    """A bulk action from the queue: on the ticked alerts, or on everything the filter matches after a
    confirmation page that says how many."""
    form = await request.form()
    if (refused := _controls(request, user, form)) is not None:
        return refused
    qs = str(form.get("filter") or "")
    try:
        f = _form_filter(form)
        qs = query_string(f)
        scope = str(form.get("scope") or "selected")
        action = str(form.get("action") or "")
        outcome = str(form.get("outcome") or "") or None
        body = BulkRequest(ids=None if scope == "filter" else _ids(form), filter=f if scope == "filter" else None,
                           action=action if action in ("acknowledge", "close", "reopen", "assign", "unassign")
                           else "acknowledge" if not action else "invalid",
                           outcome=outcome if action == "close" else None,
                           assignee=str(form.get("assignee") or "me"), suppress=_suppression_of(form),
                           dry_run=scope == "filter" and form.get("confirm") != "yes",
                           expected=_count(form.get("expected")))
        if body.ids == [] and scope != "filter":
            raise AlertError(422, "tick at least one alert, or choose everything matching the filter")
        with svc.store.transaction() as tx:
            result = run_bulk(tx, body, user, time.time_ns())
    except AlertError as exc:
        return _problem(request, user, exc, f"/alerts?{qs}")
    except ValueError as exc:  # the action or closure reason is not one of ours
        return _problem(request, user, AlertError(422, str(exc).splitlines()[0]), f"/alerts?{qs}")
    if result["dry_run"]:
        return render(request, "alerts_bulk_confirm.html", {**_labels(), "qs": qs, "f": f, "form": form,
                                                            "matched": result["matched"], "action": body.action,
                                                            "outcome": body.outcome}, user=user)
    done = urlencode([*parse_qsl(qs), ("changed", result["changed"]), ("skipped", result["skipped_count"]),
                      ("suppressed", len(result["suppressions"]))])
    return RedirectResponse(f"/alerts?{done}", status_code=303)


@router.post("/alerts/filters", response_class=HTMLResponse)
async def save_filter_form(request: Request, user: User = Depends(require_page("alerts:triage")),
                           svc: Services = Depends(services)) -> Response:
    """Keeps the queue's current filter under a name."""
    form = await request.form()
    if (refused := _controls(request, user, form)) is not None:
        return refused
    qs = str(form.get("filter") or "")[:2000]
    try:
        with svc.store.transaction() as tx:
            made = save_filter(tx=tx, owner=user.username, name=str(form.get("name") or "")[:200], query=qs,
                               now_ns=time.time_ns())
    except AlertError as exc:
        return _problem(request, user, exc, f"/alerts?{qs}")
    return RedirectResponse(f"/alerts?{made.query}", status_code=303)


@router.post("/alerts/filters/{filter_id}/delete", response_class=HTMLResponse)
def delete_filter_form(request: Request, filter_id: RowId, user: User = Depends(require_page("alerts:triage")),
                       svc: Services = Depends(services)) -> Response:
    """Deletes one of the analyst's saved filters."""
    try:
        with svc.store.transaction() as tx:
            delete_filter(tx=tx, owner=user.username, filter_id=filter_id, now_ns=time.time_ns())
    except AlertError as exc:
        return _problem(request, user, exc, "/alerts")
    return RedirectResponse("/alerts", status_code=303)


def _detail(request: Request, user: User, tx: Transaction, alert_id: int, **extra: Any) -> Response:
    alert = load_alert(tx, alert_id)
    cursor = request.query_params.get("cursor") or None
    after = parse_cursor(cursor, "severity")
    data = detail_json(tx, alert, limit=PAGE)
    if after is not None:
        data["evidence"]["items"], data["evidence"]["next_cursor"] = evidence_page(tx=tx, alert=alert, after=after,
                                                                                  limit=PAGE)
    nxt = data["evidence"]["next_cursor"]
    return render(request, "alert_detail.html", {
        **_labels(), "a": data, "cursor": cursor, "next_url": f"/alerts/{alert_id}?cursor={nxt}" if nxt else None,
        "may_escalate": allowed(user.role, "cases:write"), **extra}, user=user)


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def detail_page(request: Request, alert_id: RowId, user: User = Depends(require_page("alerts:read")),
                svc: Services = Depends(services)) -> Response:
    """An alert: its sentence, outcome, evidence timeline, the agent's health then, its cases, and what to do."""
    try:
        with svc.store.read() as tx:
            return _detail(request, user, tx, alert_id)
    except AlertError as exc:
        return _problem(request, user, exc, "/alerts")


@router.post("/alerts/{alert_id}/status", response_class=HTMLResponse)
async def status_form(request: Request, alert_id: RowId, user: User = Depends(require_page("alerts:triage")),
                      svc: Services = Depends(services)) -> Response:
    """Acknowledges, closes (with a closure reason, and for a false positive optionally a suppression) or reopens."""
    form = await request.form()
    if (refused := _controls(request, user, form)) is not None:
        return refused
    status = str(form.get("status") or "")
    outcome = str(form.get("outcome") or "") or None
    try:
        if status not in {s.value for s in AlertStatus}:
            raise AlertError(422, "choose acknowledge, close or reopen")
        if outcome is not None and outcome not in OUTCOMES:
            raise AlertError(422, f"closing needs a closure reason: {', '.join(OUTCOMES)}")
        with svc.store.transaction() as tx:
            change_one(tx, alert_id=alert_id, status=status, outcome=outcome if status == "closed" else None, who=user,
                       now_ns=time.time_ns(), fp=_suppression_of(form) if status == "closed" else None)
    except AlertError as exc:
        return _problem(request, user, exc, f"/alerts/{alert_id}")
    return RedirectResponse(f"/alerts/{alert_id}", status_code=303)


@router.post("/alerts/{alert_id}/assign", response_class=HTMLResponse)
async def assign_form(request: Request, alert_id: RowId, user: User = Depends(require_page("alerts:triage")),
                      svc: Services = Depends(services)) -> Response:
    """Assigns the alert to the analyst, to a named analyst, or to nobody."""
    form = await request.form()
    if (refused := _controls(request, user, form)) is not None:
        return refused
    choice = str(form.get("assignee") or "").strip()[:128]
    try:
        with svc.store.transaction() as tx:
            target = user.username if choice == "me" else (check_assignee(tx=tx, assignee=choice) if choice else None)
            assign(tx=tx, alert=load_alert(tx, alert_id), assignee=target, actor=user.username, now_ns=time.time_ns())
    except AlertError as exc:
        return _problem(request, user, exc, f"/alerts/{alert_id}")
    return RedirectResponse(f"/alerts/{alert_id}", status_code=303)


@router.post("/alerts/{alert_id}/reveal", response_class=HTMLResponse)
async def reveal_form(request: Request, alert_id: RowId, user: User = Depends(require_page("identity:reveal")),
                      svc: Services = Depends(services)) -> Response:
    """Shows the alert with its person's real name, after asking why; audited with the reason."""
    form = await request.form()
    if (refused := _controls(request, user, form)) is not None:
        return refused
    try:
        with svc.store.transaction() as tx:
            if not allowed(user.role, "alerts:read"):
                raise AlertError(403, "revealing here needs the alerts too: reveal from the case instead")
            alert = load_alert(tx, alert_id)
            code = pseudonym_of(tx=tx, user_name=alert.user)
            name = reveal(tx=tx, pseudonym=code, reason=str(form.get("reason") or "")[:2000], actor=user.username,
                          now_ns=time.time_ns())
            return _detail(request, user, tx, alert_id, revealed=name)
    except (AlertError, PrivacyError) as exc:
        return _problem(request, user, exc, f"/alerts/{alert_id}")
