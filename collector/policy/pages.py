"""Policies: the server-rendered pages. Forms post here and are redirected back (303); a refused form is
shown again with the reason and what was typed (422), and nothing is saved.

    GET  /policies                   every policy: newest version, where it applies, agents that applied it
    POST /policies                   a new policy: name, document (TOML), comment
    GET  /policies/{name}            the policy: form and TOML editors, versions (?version=N shows one,
                                     with its diff to the one before), labels, the agents it applies to
    POST /policies/{name}/form       the next version from the form: one entry a line in sensitive_folders,
                                     destinations, removable_mounts, exclude_paths, exclude_processes;
                                     max_hash_bytes, partial_match_share; comment
    POST /policies/{name}/toml       the next version from the TOML: document, comment
    POST /policies/{name}/assign     labels (one a line, or separated by commas or spaces), priority
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from collector.people.models import User
from collector.policy import service as policies
from collector.policy.document import FORM_LISTS, FORM_NUMBERS, DocumentError, form_values, with_form
from collector.policy.models import NAME_PATTERN, PolicyVersion, by_label_of
from collector.policy.service import PolicyProblem
from collector.policy.views import refresh_delivery, unified_diff
from collector.web.deps import Services, require_page, services
from collector.web.templating import render
from collector.web.timefmt import format_ns

__all__ = ["router", "FIELD_LABELS"]

router = APIRouter(include_in_schema=False)  # pages: the API (views.py) is what /openapi.json describes

FIELD_LABELS: dict[str, str] = {
    "sensitive_folders": "Sensitive folders", "destinations": "Destinations watched for copies",
    "removable_mounts": "Removable media mount points", "exclude_paths": "Excluded paths",
    "exclude_processes": "Excluded processes", "max_hash_bytes": "Largest file fingerprinted (bytes)",
    "partial_match_share": "Share of a file that counts as a copy (0 to 1)",
}
_NAME = re.compile(NAME_PATTERN)
_MAX_FIELD = 1 << 20
MAX_AGENTS_SHOWN = 500  # the rest are counted; the fleet page filters by label


def _field(form: Any, key: str) -> str:
    return str(form.get(key) or "")[:_MAX_FIELD]


def _when(ns: int | None) -> str:
    return format_ns(ns) if ns else ""


def _form_of(document: str) -> dict[str, str]:
    """The form's fields of a stored document; none for one that is not TOML (written past the API)."""
    try:
        return form_values(document)
    except DocumentError:
        return {}


def _version_row(v: PolicyVersion) -> dict[str, Any]:
    return {"name": v.name, "version": v.version, "sha256": v.sha256, "author": v.author, "comment": v.comment,
            "created_at": format_ns(v.created_at_ns), "document": v.document}


@router.get("/policies", response_class=HTMLResponse)
def policies_page(request: Request, user: User = Depends(require_page("policies:read")),
                  svc: Services = Depends(services)) -> Response:
    """Every policy: its newest version, where it applies and how many agents applied that version."""
    return _list(request, svc, user)


def _list(request: Request, svc: Services, user: User, *, error: str | None = None, form: dict[str, str] | None = None,
          status: int = 200) -> Response:
    with svc.store.read() as tx:
        rows = policies.summaries(tx=tx)
    items = [{**_version_row(r.latest), "labels": r.labels, "priority": r.priority, "assigned": r.assigned_agents,
              "applied": r.applied_latest, "refused": r.refused_latest} for r in rows]
    return render(request, "policies_list.html", {"policies": items, "error": error, "form": form or {}},
                  user=user, status_code=status)


@router.post("/policies")
async def create_policy_form(request: Request, user: User = Depends(require_page("policies:write")),
                             svc: Services = Depends(services)) -> Response:
    """Creates a policy from the list page's form (name, document, comment)."""
    form = await request.form()
    typed = {k: _field(form, k) for k in ("name", "document", "comment")}
    name = typed["name"].strip()
    try:
        with svc.store.transaction() as tx:
            if tx.get_policy_version(name=name) is not None:
                raise PolicyProblem(409, f"policy {name!r} exists: open it to add a version")
            policies.save_version(tx=tx, name=name, document=typed["document"], author=user.username,
                                  comment=typed["comment"], now_ns=time.time_ns())
    except PolicyProblem as exc:
        return _list(request, svc, user, error=str(exc), form=typed, status=exc.status)
    refresh_delivery(request)
    return RedirectResponse(f"/policies/{name}", status_code=303)


def _detail(request: Request, svc: Services, user: User, name: str, *, version: int | None = None,
            error: str | None = None, error_key: str = "", form: dict[str, str] | None = None,
            status: int = 200, editor: str = "edit-form") -> Response:
    if not _NAME.fullmatch(name):
        raise HTTPException(404, f"no policy {name[:70]!r}")
    with svc.store.read() as tx:
        versions = tx.list_policy_versions(name)
        if not versions:
            raise HTTPException(404, f"no policy {name!r}")
        assignments = tx.list_assignments()
        index = by_label_of(assignments)
        latest_all = {v.name: v for v in tx.latest_policy_versions()}
        states = {s.agent_id: s for s in tx.list_agent_policy_states()}
        agents = [a for a in tx.list_agents() if (w := policies.wanted_for(a, index, latest_all)) is not None
                  and w.name == name]
    latest = versions[0]
    shown = next((v for v in versions if v.version == version), None) if version is not None else None
    if version is not None and shown is None:
        raise HTTPException(404, f"policy {name!r} has no version {version}")
    before = next((v for v in versions if shown is not None and v.version < shown.version), None)
    mine = [a for a in assignments if a.policy_name == name]
    rows = []
    known_versions = {v.version: v.sha256 for v in versions}
    for agent in agents[:MAX_AGENTS_SHOWN]:
        s = states.get(agent.agent_id)
        applied = s is not None and (s.applied_name, s.applied_version, s.applied_sha256) == (
            name, latest.version, latest.sha256)
        unknown = (s is not None and s.applied_name == name and s.applied_version is not None
                   and known_versions.get(s.applied_version) != s.applied_sha256)
        rows.append({"agent_id": agent.agent_id, "hostname": agent.hostname, "labels": policies.labels_of(agent),
                     "applied_name": s.applied_name if s else None, "applied_version": s.applied_version if s else None,
                     "applied_at": _when(s.applied_at_ns) if s else "", "up_to_date": applied, "unknown": unknown,
                     "refused_version": s.refused_version if s and s.refused_name == name else None,
                     "refused_reason": s.refused_reason if s and s.refused_name == name else None,
                     "refused_at": _when(s.refused_at_ns) if s and s.refused_name == name else ""})
    # what is stored, with what was typed into the form that was refused over it
    values = {**_form_of(latest.document), "document": latest.document, "comment": "",
              "labels": "\n".join(a.label for a in mine), "priority": str(max((a.priority for a in mine), default=0)),
              **(form or {})}
    return render(request, "policy_detail.html", {
        "name": name, "latest": _version_row(latest), "versions": [_version_row(v) for v in versions],
        "shown": _version_row(shown) if shown else None,
        "diff": unified_diff(before, shown) if shown is not None and before is not None else None,
        "labels": [a.label for a in mine], "agents": rows, "agents_total": len(agents), "form": values,
        "error": error, "error_key": error_key, "lists": FORM_LISTS, "field_labels": FIELD_LABELS,
        "editor": editor}, user=user, status_code=status)


@router.get("/policies/{name}", response_class=HTMLResponse)
def policy_page(request: Request, name: str, version: int | None = Query(None, ge=1, le=2**63 - 1),
                user: User = Depends(require_page("policies:read")), svc: Services = Depends(services)) -> Response:
    """One policy: its editors, its versions, its labels and the agents it applies to."""
    return _detail(request, svc, user, name, version=version)


def _new_version(request: Request, svc: Services, user: User, name: str, *, document: str, comment: str,
                 typed: dict[str, str], editor: str) -> Response:
    try:
        with svc.store.transaction() as tx:
            if tx.get_policy_version(name=name) is None:
                raise HTTPException(404, f"no policy {name!r}")
            policies.save_version(tx=tx, name=name, document=document, author=user.username, comment=comment,
                                  now_ns=time.time_ns())
    except PolicyProblem as exc:
        return _detail(request, svc, user, name, error=str(exc), error_key=exc.key, form=typed, status=exc.status,
                       editor=editor)
    refresh_delivery(request)
    return RedirectResponse(f"/policies/{name}", status_code=303)


def _typed(form: Any, *keys: str) -> dict[str, str]:
    return {k: _field(form, k) for k in keys}


@router.post("/policies/{name}/form")
async def edit_by_form(request: Request, name: str, user: User = Depends(require_page("policies:write")),
                       svc: Services = Depends(services)) -> Response:
    """The next version from the form's lists and numbers (the other keys of the newest version kept)."""
    typed = _typed(await request.form(), *FORM_LISTS, *FORM_NUMBERS, "comment")
    with svc.store.read() as tx:
        latest = tx.get_policy_version(name=name) if _NAME.fullmatch(name) else None
    if latest is None:
        raise HTTPException(404, f"no policy {name[:70]!r}")
    try:
        document = with_form(latest.document, typed)
    except DocumentError as exc:
        return _detail(request, svc, user, name, error=f"the agent would refuse this policy: {exc}",
                       error_key=exc.key, form={**typed, "document": latest.document}, status=422)
    return _new_version(request, svc, user, name, document=document, comment=typed["comment"],
                        typed={**typed, "document": document}, editor="edit-form")


@router.post("/policies/{name}/toml")
async def edit_by_toml(request: Request, name: str, user: User = Depends(require_page("policies:write")),
                       svc: Services = Depends(services)) -> Response:
    """The next version from the TOML as typed."""
    typed = _typed(await request.form(), "document", "comment")
    return _new_version(request, svc, user, name, document=typed["document"], comment=typed["comment"],
                        typed={**typed, **_form_of(typed["document"])}, editor="edit-toml")


@router.post("/policies/{name}/assign")
async def assign_form(request: Request, name: str, user: User = Depends(require_page("policies:write")),
                      svc: Services = Depends(services)) -> Response:
    """Sets the labels that carry the policy and its priority."""
    form = await request.form()
    labels = [label for label in re.split(r"[\s,]+", _field(form, "labels")) if label]
    priority_text = _field(form, "priority").strip() or "0"
    try:
        if not re.fullmatch(r"-?\d{1,7}", priority_text):
            raise PolicyProblem(422, "priority is a whole number from -1000000 to 1000000", key="priority")
        with svc.store.transaction() as tx:
            policies.assign(tx=tx, name=name, labels=labels, priority=int(priority_text), actor=user.username,
                            now_ns=time.time_ns())
    except PolicyProblem as exc:
        if exc.status == 404:
            raise HTTPException(404, str(exc)) from exc
        return _detail(request, svc, user, name, error=str(exc), error_key=exc.key, status=exc.status,
                       form={"labels": _field(form, "labels"), "priority": priority_text})
    refresh_delivery(request)
    return RedirectResponse(f"/policies/{name}", status_code=303)
