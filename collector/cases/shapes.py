"""How a case looks from outside: the API's response models, and the one function that reads a case whole.

The API (views.py) returns these models and the pages (pages.py) render the same values, so both
always show the same thing. The employee appears by pseudonym; the real name only in HR's employee
record, and only to a role holding ``cases:hr``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from collector.cases.hr import CHINA, current_records
from collector.cases.models import Attachment, Case, Handoff, HistoryEntry, HrKind, HrRecord, steps_from
from collector.domain.roles import allowed
from collector.privacy.service import pseudonym_of
from collector.storage.base import Transaction
from collector.web.timefmt import format_ns

__all__ = ["CaseOut", "CaseDetail", "HistoryOut", "CommentOut", "AttachmentOut", "HrRecordOut", "HandoffOut",
           "ScheduleLine", "StepOut", "CaseList", "case_out", "case_detail", "handoff_out", "attachment_out",
           "hr_out", "china_time"]


def china_time(ns: int | None) -> str | None:
    """A time for people in China: 2026-11-20 09:00:00 (UTC+8)."""
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, CHINA).strftime("%Y-%m-%d %H:%M:%S")


class StepOut(BaseModel):
    """A step the case could take next."""

    to: str
    label: str
    permission: str
    needs: list[str]
    allowed_for_you: bool


class CaseOut(BaseModel):
    """A case in lists."""

    id: int
    title: str
    state: str
    subject_pseudonym: str
    alert_ids: list[int]
    assignee: str | None
    created_by: str
    created_at: str
    updated_at: str
    incident_first_at: str


class CaseList(BaseModel):
    """A page of cases."""

    items: list[CaseOut]
    next_cursor: str | None


class HistoryOut(BaseModel):
    """One change: who, when, what, before and after."""

    id: int | None
    at: str
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    before: dict[str, Any]
    after: dict[str, Any]


class CommentOut(BaseModel):
    """A comment."""

    id: int | None
    author: str
    at: str
    body: str


class AttachmentOut(BaseModel):
    """A file on the case, by hash; ``name`` is display text only."""

    id: int | None
    name: str
    sha256: str
    size: int
    content_type: str
    uploaded_by: str
    uploaded_at: str
    download: str


class HrRecordOut(BaseModel):
    """One of HR's records; ``in_force`` marks the newest of its kind."""

    id: int | None
    kind: str
    data: dict[str, Any]
    recorded_by: str
    recorded_at: str
    in_force: bool


class ScheduleLine(BaseModel):
    """One month of the bridge's schedule."""

    period: str
    deduction_fen: int
    cap_fen: int | None = None
    headroom_fen: int | None = None
    binding: str
    balance_after_fen: int | None = None
    state: str | None = None
    blocked: str | None = None


class HandoffOut(BaseModel):
    """One hand-off to payroll and the bridge's answer."""

    number: int
    key: str
    state: str
    status: str
    sent_by: str
    created_at: str
    attempts: int
    next_attempt_at: str | None
    last_error: str | None
    answered_at: str | None
    duplicate: bool
    refusals: list[dict[str, str]]
    schedule: list[ScheduleLine]
    remaining_fen: int | None
    schedule_read_at: str | None


class CaseDetail(CaseOut):
    """A case with everything on it."""

    history: list[HistoryOut]
    comments: list[CommentOut]
    attachments: list[AttachmentOut]
    hr_records: list[HrRecordOut]
    handoffs: list[HandoffOut]
    steps: list[StepOut]


def case_out(c: Case, *, pseudonym: str) -> CaseOut:
    """Shapes a case for lists."""
    return CaseOut(id=c.id or 0, title=c.title, state=c.state, subject_pseudonym=pseudonym, alert_ids=list(c.alert_ids),
                   assignee=c.assignee, created_by=c.created_by, created_at=format_ns(c.created_at_ns),
                   updated_at=format_ns(c.updated_at_ns), incident_first_at=format_ns(c.incident_first_ns))


def attachment_out(a: Attachment) -> AttachmentOut:
    """Shapes a file record."""
    return AttachmentOut(id=a.id, name=a.display_name, sha256=a.sha256, size=a.size, content_type=a.content_type,
                         uploaded_by=a.uploaded_by, uploaded_at=format_ns(a.uploaded_at_ns),
                         download=f"/api/v1/cases/{a.case_id}/attachments/{a.id}")


def hr_out(records: list[HrRecord], *, role: str) -> list[HrRecordOut]:
    """Shapes HR's records; the employee's name only for HR."""
    newest = {r.id for r in current_records(records).values()}
    out = []
    for r in records:
        data = dict(r.data)
        if r.kind == HrKind.EMPLOYEE.value and not allowed(role, "cases:hr"):
            data["name"] = None
        out.append(HrRecordOut(id=r.id, kind=r.kind, data=data, recorded_by=r.recorded_by,
                               recorded_at=format_ns(r.recorded_at_ns), in_force=r.id in newest))
    return out


def _status(h: Handoff) -> str:
    if h.state == "pending":
        if h.last_error:
            return (f"payroll bridge unreachable, retrying (attempt {h.attempts}, next at "
                    f"{china_time(h.next_attempt_ns)} UTC+8): {h.last_error}")
        return "waiting to be delivered to the payroll bridge"
    if h.state == "refused":
        return "refused by the payroll bridge: correct what it names and send again"
    return "filed by the payroll bridge" + (" (recognised as the same hand-off)" if h.answer.get("duplicate") else "")


def handoff_out(h: Handoff) -> HandoffOut:
    """Shapes a hand-off with the bridge's answer and schedule."""
    raw = h.answer.get("refusals")
    refusals = [{"code": str(r.get("code", ""))[:64], "message": str(r.get("message", ""))[:1000]}
                for r in (raw if isinstance(raw, list) else []) if isinstance(r, dict)]
    if h.state == "refused" and not refusals and h.answer.get("detail"):
        refusals = [{"code": str(h.answer.get("error", "MALFORMED")), "message": str(h.answer["detail"])[:500]}]
    lines = []
    raw_lines = h.schedule.get("lines")
    for x in raw_lines if isinstance(raw_lines, list) else []:
        try:  # the bridge's answer is data from outside: a line it shapes otherwise is left out, never a 500
            lines.append(ScheduleLine.model_validate({k: x[k] for k in ScheduleLine.model_fields if k in x}))
        except (TypeError, ValidationError):
            continue
    remaining = h.schedule.get("remaining_fen")
    return HandoffOut(
        number=h.number, key=h.key, state=h.state, status=_status(h), sent_by=h.sent_by,
        created_at=format_ns(h.created_at_ns), attempts=h.attempts,
        next_attempt_at=format_ns(h.next_attempt_ns) if h.state == "pending" and h.next_attempt_ns else None,
        last_error=h.last_error, answered_at=format_ns(h.answered_at_ns) if h.answered_at_ns else None,
        duplicate=bool(h.answer.get("duplicate")), refusals=refusals, schedule=lines,
        remaining_fen=remaining if isinstance(remaining, int) else None,
        schedule_read_at=format_ns(h.schedule_at_ns) if h.schedule_at_ns else None)


def _history(h: HistoryEntry) -> HistoryOut:
    return HistoryOut(id=h.id, at=format_ns(h.at_ns), actor=h.actor, action=h.action, from_state=h.from_state,
                      to_state=h.to_state, before=dict(h.before), after=dict(h.after))


def case_detail(tx: Transaction, c: Case, *, role: str) -> CaseDetail:
    """Reads everything on a case, shaped for the caller's role."""
    assert c.id is not None
    base = case_out(c, pseudonym=pseudonym_of(tx=tx, user_name=c.subject_user))
    steps = [StepOut(to=s.target.value, label=s.label, permission=s.permission, needs=[n.value for n in s.needs],
                     allowed_for_you=allowed(role, s.permission)) for s in steps_from(c.state)]
    return CaseDetail(
        **base.model_dump(),
        history=[_history(h) for h in tx.case_history(c.id)],
        comments=[CommentOut(id=x.id, author=x.author, at=format_ns(x.at_ns), body=x.body)
                  for x in tx.list_comments(c.id)],
        attachments=[attachment_out(a) for a in tx.list_attachments(c.id)],
        hr_records=hr_out(list(tx.hr_records(c.id)), role=role),
        handoffs=[handoff_out(h) for h in tx.handoffs(c.id)],
        steps=steps)
