"""Policies: the JSON API. Views authorize, open one unit of work, call the service, shape the answer.

    GET  /api/v1/policies                              every policy: newest version, labels, agents reached
    POST /api/v1/policies                              {"name", "document", "comment"?} -> 201 version 1
    GET  /api/v1/policies/{name}                       newest version with its document, labels, priority
    POST /api/v1/policies/{name}/versions              {"document", "comment"?} -> 201 the next version
                                                       (200 "new": false when the document is unchanged)
    GET  /api/v1/policies/{name}/versions              every version, newest first (documents left out)
    GET  /api/v1/policies/{name}/versions/{version}    one version with its document
    GET  /api/v1/policies/{name}/diff?from=A&to=B      unified diff of two versions' documents
    PUT  /api/v1/policies/{name}/assignment            {"labels": [...], "priority": 0} -> the labels carrying it
    GET  /api/v1/agents/{agent_id}/policy              assigned, applied and refused, for one agent

A document the agent would refuse is 422 with ``detail`` (the agent's reason) and ``key`` (the
offending entry); nothing is saved.
"""

from __future__ import annotations

import difflib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from collector.people.models import User
from collector.policy import service as policies
from collector.policy.delivery import PolicyDelivery
from collector.policy.document import MAX_DOCUMENT_BYTES
from collector.policy.models import MAX_COMMENT, MAX_PRIORITY, NAME_PATTERN, AgentPolicyState, PolicyVersion
from collector.policy.service import PolicyProblem
from collector.web.deps import Services, page_json, require, services
from collector.web.timefmt import format_ns

__all__ = ["router", "refresh_delivery", "version_out", "state_out", "problem_response"]

router = APIRouter(prefix="/api/v1")

PolicyName = Annotated[str, Path(max_length=64, pattern=f"^{NAME_PATTERN}$", description="the policy's name")]
VersionNo = Annotated[int, Path(ge=1, le=2**63 - 1, description="the version number")]


class PolicyCreate(BaseModel):
    """A new policy and its first version."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64)
    document: str = Field(max_length=MAX_DOCUMENT_BYTES, description="the [policy] table as TOML")
    comment: str = Field("", max_length=MAX_COMMENT)


class VersionCreate(BaseModel):
    """The next version of a policy."""

    model_config = ConfigDict(extra="forbid")
    document: str = Field(max_length=MAX_DOCUMENT_BYTES, description="the [policy] table as TOML")
    comment: str = Field("", max_length=MAX_COMMENT)


class AssignmentSet(BaseModel):
    """The labels that carry a policy (replacing the ones it had), and its priority among labels."""

    model_config = ConfigDict(extra="forbid")
    labels: list[str] = Field(max_length=policies.MAX_LABELS_ASSIGNED)
    priority: int = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)


def version_out(v: PolicyVersion, *, document: bool = True) -> dict[str, Any]:
    """A version as the API shows it."""
    out: dict[str, Any] = {"name": v.name, "version": v.version, "sha256": v.sha256, "author": v.author,
                           "created_at": format_ns(v.created_at_ns), "comment": v.comment}
    if document:
        out["document"] = v.document
    return out


def state_out(s: AgentPolicyState | None) -> dict[str, Any]:
    """What an agent reported, as the API shows it."""
    if s is None:
        return {"applied": None, "refused": None}
    applied = None if s.applied_name is None else {
        "name": s.applied_name, "version": s.applied_version, "sha256": s.applied_sha256, "source": s.applied_source,
        "at": format_ns(s.applied_at_ns) if s.applied_at_ns else None}
    refused = None if s.refused_name is None else {
        "name": s.refused_name, "version": s.refused_version, "sha256": s.refused_sha256, "reason": s.refused_reason,
        "at": format_ns(s.refused_at_ns) if s.refused_at_ns else None}
    return {"applied": applied, "refused": refused}


def problem_response(exc: PolicyProblem) -> JSONResponse:
    """A refused change: its status, the reason, and the document's key it concerns."""
    return JSONResponse({"detail": str(exc), "key": exc.key}, status_code=exc.status)


def refresh_delivery(request: Request) -> None:
    """Rebuilds this collector's delivery map at once after a change (the others do within seconds)."""
    delivery = getattr(request.app.state, "policies", None)
    if isinstance(delivery, PolicyDelivery):
        delivery.refresh_quietly()


def _missing(name: str) -> HTTPException:
    return HTTPException(404, f"no policy {name!r}")


@router.get("/policies")
def list_policies(who: User = Depends(require("policies:read")), svc: Services = Depends(services)) -> dict[str, Any]:
    """Every policy with its newest version, the labels that carry it and how many agents applied it."""
    with svc.store.read() as tx:
        rows = policies.summaries(tx=tx)
    return page_json([{**version_out(r.latest, document=False), "labels": list(r.labels), "priority": r.priority,
                       "assigned_agents": r.assigned_agents, "applied_latest": r.applied_latest,
                       "refused_latest": r.refused_latest} for r in rows], None)


def _save(request: Request, svc: Services, who: User, *, name: str, document: str, comment: str,
          must_exist: bool) -> JSONResponse:
    try:
        with svc.store.transaction() as tx:
            exists = tx.get_policy_version(name=name) is not None
            if exists != must_exist:
                if must_exist:
                    raise _missing(name)
                raise PolicyProblem(409, f"policy {name!r} exists: add a version to it instead")
            made, new = policies.save_version(tx=tx, name=name, document=document, author=who.username,
                                              comment=comment, now_ns=time.time_ns())
    except PolicyProblem as exc:
        return problem_response(exc)
    if new:
        refresh_delivery(request)
    return JSONResponse({**version_out(made), "new": new}, status_code=201 if new else 200)


@router.post("/policies", status_code=201)
def create_policy(body: PolicyCreate, request: Request, who: User = Depends(require("policies:write")),
                  svc: Services = Depends(services)) -> JSONResponse:
    """Creates a policy with its first version, if the agent's parser accepts the document."""
    return _save(request, svc, who, name=body.name, document=body.document, comment=body.comment, must_exist=False)


@router.get("/policies/{name}")
def get_policy(name: PolicyName, who: User = Depends(require("policies:read")),
               svc: Services = Depends(services)) -> dict[str, Any]:
    """The newest version with its document, and the labels that carry the policy."""
    with svc.store.read() as tx:
        latest = tx.get_policy_version(name=name)
        mine = [a for a in tx.list_assignments() if a.policy_name == name]
    if latest is None:
        raise _missing(name)
    return {**version_out(latest), "labels": [a.label for a in mine],
            "priority": max((a.priority for a in mine), default=None)}


@router.post("/policies/{name}/versions", status_code=201)
def add_version(name: PolicyName, body: VersionCreate, request: Request,
                who: User = Depends(require("policies:write")), svc: Services = Depends(services)) -> JSONResponse:
    """Saves the next version of a policy, if the agent's parser accepts the document."""
    return _save(request, svc, who, name=name, document=body.document, comment=body.comment, must_exist=True)


@router.get("/policies/{name}/versions")
def list_versions(name: PolicyName, who: User = Depends(require("policies:read")),
                  svc: Services = Depends(services)) -> dict[str, Any]:
    """Every version of a policy, newest first, without the documents."""
    with svc.store.read() as tx:
        versions = tx.list_policy_versions(name)
    if not versions:
        raise _missing(name)
    return page_json([version_out(v, document=False) for v in versions], None)


@router.get("/policies/{name}/versions/{version}")
def get_version(name: PolicyName, version: VersionNo, who: User = Depends(require("policies:read")),
                svc: Services = Depends(services)) -> dict[str, Any]:
    """One version of a policy with its document."""
    with svc.store.read() as tx:
        found = tx.get_policy_version(name=name, version=version)
    if found is None:
        raise HTTPException(404, f"policy {name!r} has no version {version}")
    return version_out(found)


def unified_diff(old: PolicyVersion, new: PolicyVersion) -> str:
    """The change from one version's document to another's, as a unified diff."""
    return "".join(difflib.unified_diff(old.document.splitlines(keepends=True), new.document.splitlines(keepends=True),
                                        fromfile=f"{old.name} v{old.version}", tofile=f"{new.name} v{new.version}"))


@router.get("/policies/{name}/diff")
def diff_versions(name: PolicyName, a: int = Query(..., alias="from", ge=1, le=2**63 - 1),
                  b: int = Query(..., alias="to", ge=1, le=2**63 - 1), who: User = Depends(require("policies:read")),
                  svc: Services = Depends(services)) -> dict[str, Any]:
    """The unified diff between two versions' documents."""
    with svc.store.read() as tx:
        old, new = tx.get_policy_version(name=name, version=a), tx.get_policy_version(name=name, version=b)
    if old is None or new is None:
        raise HTTPException(404, f"policy {name!r} has no version {a if old is None else b}")
    return {"name": name, "from": a, "to": b, "diff": unified_diff(old, new)}


@router.put("/policies/{name}/assignment")
def set_assignment(name: PolicyName, body: AssignmentSet, request: Request,
                   who: User = Depends(require("policies:write")), svc: Services = Depends(services)) -> Any:
    """Makes these labels exactly the ones that carry the policy, at this priority; audited."""
    try:
        with svc.store.transaction() as tx:
            made = policies.assign(tx=tx, name=name, labels=body.labels, priority=body.priority,
                                   actor=who.username, now_ns=time.time_ns())
    except PolicyProblem as exc:
        return problem_response(exc)
    refresh_delivery(request)
    return {"name": name, "labels": [a.label for a in made], "priority": body.priority}


@router.get("/agents/{agent_id}/policy")
def agent_policy(agent_id: Annotated[str, Path(max_length=64)], who: User = Depends(require("policies:read")),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    """The policy assigned to an agent (and by which label), what it applied and what it last refused."""
    with svc.store.read() as tx:
        view = policies.agent_view(tx=tx, agent_id=agent_id)
    if view is None:
        raise HTTPException(404, f"no agent {agent_id!r}")
    return {"agent_id": agent_id,
            "assigned": None if view.assigned is None else {**version_out(view.assigned, document=False),
                                                            "label": view.assigned_by_label},
            **state_out(view.state),
            "applied_known": view.applied_known, "in_sync": view.in_sync}
