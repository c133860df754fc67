"""Cases: opened from alerts, moved only along the lifecycle table, every change in history and audit.

Every function works inside the caller's transaction and writes the case, its history row and its
audit row together. Errors are ``CaseError`` with an HTTP status hint::

    CaseError  (404 no such case or file, 409 a step not allowed now or breaking four-eyes,
                403 a role that may not take the step, 422 what the step needs is missing,
                413 a file over the limit)
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import replace
from typing import Any, Mapping, Protocol, Sequence

from collector.audit.models import AuditEntry
from collector.cases import hr
from collector.cases.models import (Attachment, Case, CaseState, Comment, Handoff, HandoffState, HistoryEntry,
                                    HrKind, HrRecord, Need, Step, four_eyes_violation, step_for)
from collector.domain.roles import allowed
from collector.storage.base import AlertArea, AlreadyExists, AuditArea, CaseArea

__all__ = ["CaseError", "open_case", "transition", "assign", "comment", "attach", "record_hr", "resend",
           "refresh_schedule", "safe_display_name", "BRIDGE_CASE_PREFIX", "MAX_TITLE", "MAX_COMMENT",
           "ACTIVE_STATES", "HR_EDITABLE", "bridge_case_id"]

BRIDGE_CASE_PREFIX = "SC-"  # the case's id at the payroll bridge: SC-<id>, the same for every hand-off
MAX_TITLE, MAX_COMMENT, MAX_ALERTS = 200, 10_000, 500
_BRIDGE_ACCOUNT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # docs/payroll.md: a confirmer is a stable account id
# a case in one of these still holds its alerts: another case may not take them
ACTIVE_STATES = frozenset(s.value for s in CaseState) - {CaseState.DISMISSED.value, CaseState.CLOSED.value}
# where HR may (re)record: before its confirmation, during an appeal, and after a refused hand-off
HR_EDITABLE = frozenset({CaseState.SECURITY_CONFIRMED.value, CaseState.APPEALED.value,
                         CaseState.SENT_TO_PAYROLL.value})


class CaseError(Exception):
    """A change to a case that is not allowed; ``status`` is an HTTP status hint."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CaseTx(CaseArea, AlertArea, AuditArea, Protocol):
    """What changing a case needs."""


def bridge_case_id(case_id: int) -> str:
    """The case's id at the payroll bridge."""
    return f"{BRIDGE_CASE_PREFIX}{case_id}"


def _get(tx: CaseArea, case_id: int) -> Case:
    case = tx.get_case(case_id)
    if case is None:
        raise CaseError(404, f"no case {case_id}")
    return case


def _clean(text: str | None, *, label: str, max_len: int, required: bool = True) -> str:
    value = " ".join((text or "").split()) if label != "comment" else (text or "").strip()
    if required and not value:
        raise CaseError(422, f"{label} is missing")
    if len(value) > max_len:
        raise CaseError(422, f"{label} is longer than {max_len} characters")
    if "\x00" in value:
        raise CaseError(422, f"{label} holds a NUL character")
    return value


def _log(tx: CaseTx, case: Case, *, actor: str, now_ns: int, action: str, before: Mapping[str, Any],
         after: Mapping[str, Any], from_state: str | None = None, to_state: str | None = None) -> None:
    assert case.id is not None
    tx.add_case_history(HistoryEntry(case.id, now_ns, actor, action, from_state, to_state, before, after))
    tx.append_audit(AuditEntry(now_ns, actor, f"case.{action}", str(case.id), {"before": dict(before),
                                                                               "after": dict(after)}))


def open_case(*, tx: CaseTx, alert_ids: Sequence[int], title: str, actor: str, now_ns: int) -> Case:
    """Opens a case from alerts about one person; alerts already in an active case are refused."""
    name = _clean(title, label="the title", max_len=MAX_TITLE)
    ids = list(dict.fromkeys(alert_ids))
    if not ids:
        raise CaseError(422, "a case is opened from at least one alert")
    if len(ids) > MAX_ALERTS:
        raise CaseError(422, f"a case holds at most {MAX_ALERTS} alerts")
    alerts = {a: tx.get_alert(a) for a in ids}
    unknown = [a for a, found in alerts.items() if found is None]
    if unknown:
        raise CaseError(422, f"unknown alert ids: {', '.join(str(a) for a in unknown)}")
    taken = {a: [c for c in tx.cases_for_alert(a) if (got := tx.get_case(c)) is not None and got.state in ACTIVE_STATES]
             for a in ids}
    busy = {a: cs for a, cs in taken.items() if cs}
    if busy:
        raise CaseError(409, "already in an open case: " + "; ".join(
            f"alert {a} in case {', '.join(str(c) for c in cs)}" for a, cs in busy.items()))
    people = sorted({found.user for found in alerts.values() if found is not None and found.user})
    if len(people) > 1:
        raise CaseError(422, f"the alerts concern {len(people)} different people: a case concerns one employee")
    first = tx.incident_first_ns(ids)
    if first is None:  # no stored evidence event (retention, or an agent alert): the earliest alert
        first = min(found.created_at_ns for found in alerts.values() if found is not None)
    case = tx.add_case(Case(name, CaseState.OPEN.value, people[0] if people else "", actor, now_ns, now_ns,
                            tuple(ids), first))
    _log(tx, case, actor=actor, now_ns=now_ns, action="open", before={},
         after={"title": name, "alert_ids": ids, "state": case.state}, to_state=case.state)
    return case


def _need(step: Step, need: Need, tx: CaseTx, case: Case, fields: Mapping[str, Any], now_ns: int) -> str | None:
    """Why the need is not met, or None."""
    assert case.id is not None
    if need is Need.REASON:
        return None if str(fields.get("reason") or "").strip() else f"{step.label.lower()} needs a reason"
    current = hr.current_records(tx.hr_records(case.id))
    if need is Need.HR_RECORDS:
        missing = hr.missing_for_confirmation(current, tx.list_attachments(case.id))
        return f"HR has still to record: {'; '.join(missing)}" if missing else None
    if need is Need.APPEAL:
        appeal = current.get(HrKind.APPEAL.value)
        last_hr = max((h.at_ns for h in tx.case_history(case.id) if h.to_state == CaseState.HR_CONFIRMED.value),
                      default=0)
        ok = appeal is not None and appeal.recorded_at_ns >= last_hr
        return None if ok else "record the employee's appeal (received within the notice's window) first"
    if need is Need.DECISION:
        decision = current.get(HrKind.DECISION.value)
        appeal = current.get(HrKind.APPEAL.value)
        ok = decision is not None and appeal is not None and decision.recorded_at_ns >= appeal.recorded_at_ns
        return None if ok else "record HR's written decision on the appeal first"
    handoffs = tx.handoffs(case.id)
    last = handoffs[-1] if handoffs else None
    if last is None or last.state != HandoffState.ACCEPTED.value:
        return "the payroll bridge has not accepted the hand-off"
    remaining = last.schedule.get("remaining_fen")
    if not isinstance(remaining, int) or remaining > 0:
        return (f"the schedule has {hr.format_fen(remaining)} yuan left to recover" if isinstance(remaining, int)
                else "the bridge's schedule has not been read yet")
    raw = last.schedule.get("lines")
    lines = [x for x in (raw if isinstance(raw, list) else []) if isinstance(x, dict)]
    unpaid = [str(x.get("period")) for x in lines if x.get("state") != "exported" and x.get("deduction_fen")]
    if unpaid:  # scheduled is not paid: the case stays open until payroll has exported every month
        return f"the months {', '.join(unpaid[:12])} are scheduled but not yet exported by payroll"
    return None


def transition(*, tx: CaseTx, case_id: int, to: str, actor: str, role: str, now_ns: int,
               fields: Mapping[str, Any] | None = None) -> Case:
    """Takes one step of the lifecycle table: 409 if not allowed now or breaking four-eyes, 403 for a role that
    may not, 422 when what it needs is missing; the step to sent_to_payroll writes the outbox row."""
    case = _get(tx, case_id)
    assert case.id is not None
    fields = fields or {}
    step = step_for(case.state, to)
    if step is None and to not in {s.value for s in CaseState}:
        raise CaseError(422, f"unknown state {str(to)[:40]!r}; states are {', '.join(s.value for s in CaseState)}")
    if step is None:
        raise CaseError(409, f"a case that is {case.state} cannot become {to}: no step of the lifecycle leads there")
    if not allowed(role, step.permission):
        raise CaseError(403, f"role {role!r} may not take the step {case.state} -> {to} ({step.permission})")
    history = tx.case_history(case.id)
    why = four_eyes_violation(step, actor, history)
    if why:
        raise CaseError(409, why)
    for need in step.needs:
        missing = _need(step, need, tx, case, fields, now_ns)
        if missing:
            raise CaseError(422, missing)
    reason = _clean(str(fields.get("reason") or ""), label="the reason", max_len=4000, required=False)
    moved = replace(case, state=step.target.value, updated_at_ns=now_ns)
    if not tx.update_case(moved, only_from=case.state):
        raise CaseError(409, f"the case changed meanwhile (no longer {case.state}): look at it again")
    after: dict[str, Any] = {"state": moved.state}
    if reason:
        after["reason"] = reason
    if step.target is CaseState.SENT_TO_PAYROLL:
        after["handoff"] = _write_handoff(tx, moved, history, actor=actor, now_ns=now_ns).number
    _log(tx, moved, actor=actor, now_ns=now_ns, action="transition", before={"state": case.state}, after=after,
         from_state=case.state, to_state=moved.state)
    return moved


def _write_handoff(tx: CaseTx, case: Case, history: Sequence[HistoryEntry], *, actor: str, now_ns: int) -> Handoff:
    """Freezes the bridge's document for the next hand-off number into the outbox."""
    import json

    assert case.id is not None
    sec = [h for h in history if h.action == "transition" and h.to_state == CaseState.SECURITY_CONFIRMED.value]
    hrs = [h for h in history if h.action == "transition" and h.to_state == CaseState.HR_CONFIRMED.value]
    if not sec or not hrs:
        raise CaseError(409, "the case has no security and HR confirmation on record")
    for who in (sec[-1].actor, hrs[-1].actor, actor):
        if not _BRIDGE_ACCOUNT.match(who.casefold()):  # the bridge would refuse it (CONFIRMER_NOT_ACCOUNT_ID)
            raise CaseError(422, f"{who!r} is not an account id the payroll bridge accepts (letters, digits, '.', "
                            "'_', '-'; no e-mail form): the confirmers need directory account names")
    number = len(tx.handoffs(case.id)) + 1
    payload = hr.payroll_payload(
        case=case, bridge_case_id=bridge_case_id(case.id), current=hr.current_records(tx.hr_records(case.id)),
        attachments=tx.list_attachments(case.id), security=(sec[-1].actor, sec[-1].at_ns),
        hr=(hrs[-1].actor, hrs[-1].at_ns), sender=actor, sent_at_ns=now_ns, number=number)
    text = json.dumps(payload, ensure_ascii=False, sort_keys=True)
    try:
        return tx.add_handoff(Handoff(case.id, number, text, actor, now_ns, next_attempt_ns=now_ns))
    except AlreadyExists as exc:  # someone sent it at the same moment: theirs stands, this one is refused
        raise CaseError(409, f"hand-off {number} of case {case.id} was just written by someone else") from exc


def resend(*, tx: CaseTx, case_id: int, actor: str, role: str, now_ns: int) -> Handoff:
    """After a refused hand-off and HR's corrections, sends the case again under a new hand-off number."""
    case = _get(tx, case_id)
    assert case.id is not None
    if not allowed(role, "cases:hr"):
        raise CaseError(403, f"role {role!r} may not send a case to payroll")
    if case.state != CaseState.SENT_TO_PAYROLL.value:
        raise CaseError(409, f"a case that is {case.state} is not with payroll")
    handoffs = tx.handoffs(case.id)
    if not handoffs or handoffs[-1].state != HandoffState.REFUSED.value:
        raise CaseError(409, "only a refused hand-off is sent again; a pending one is still being delivered "
                        "and an accepted one is filed")
    history = tx.case_history(case.id)
    why = four_eyes_violation(step_for("hr_confirmed", "sent_to_payroll") or _never(), actor, history)
    if why:
        raise CaseError(409, why)
    missing = hr.missing_for_confirmation(hr.current_records(tx.hr_records(case.id)), tx.list_attachments(case.id))
    if missing:
        raise CaseError(422, f"HR has still to record: {'; '.join(missing)}")
    made = _write_handoff(tx, case, history, actor=actor, now_ns=now_ns)
    _log(tx, case, actor=actor, now_ns=now_ns, action="resend", before={"handoff": handoffs[-1].number},
         after={"handoff": made.number})
    return made


def _never() -> Step:
    raise AssertionError("the lifecycle table lost its hand-off step")


def refresh_schedule(*, tx: CaseTx, case_id: int, actor: str, now_ns: int) -> Handoff:
    """Asks the worker to read the accepted hand-off's schedule from the bridge again now."""
    case = _get(tx, case_id)
    assert case.id is not None
    handoffs = tx.handoffs(case.id)
    if not handoffs or handoffs[-1].state != HandoffState.ACCEPTED.value:
        raise CaseError(409, "the bridge has not accepted a hand-off of this case")
    due = replace(handoffs[-1], next_attempt_ns=now_ns)
    tx.save_handoff(due)
    tx.append_audit(AuditEntry(now_ns, actor, "case.schedule_refresh", str(case.id), {"handoff": due.number}))
    return due


def assign(*, tx: CaseTx, case_id: int, assignee: str | None, actor: str, now_ns: int) -> Case:
    """Gives the case to someone (or no one)."""
    case = _get(tx, case_id)
    who = _clean(assignee, label="the assignee", max_len=128, required=False) or None
    moved = replace(case, assignee=who, updated_at_ns=now_ns)
    tx.update_case(moved)
    _log(tx, moved, actor=actor, now_ns=now_ns, action="assign", before={"assignee": case.assignee},
         after={"assignee": who})
    return moved


def comment(*, tx: CaseTx, case_id: int, body: str, actor: str, now_ns: int) -> Comment:
    """Adds a comment."""
    case = _get(tx, case_id)
    assert case.id is not None
    text = _clean(body, label="comment", max_len=MAX_COMMENT)
    made = tx.add_comment(Comment(case.id, actor, now_ns, text))
    _log(tx, case, actor=actor, now_ns=now_ns, action="comment", before={}, after={"comment_id": made.id,
                                                                                    "length": len(text)})
    return made


_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$")
MAX_NAME = 200


def safe_display_name(name: str) -> str:
    """The uploaded name as display text only: no directories, no control characters, not too long."""
    if "\x00" in name:
        raise CaseError(422, "the file name holds a NUL character")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        raise CaseError(422, "the file name holds control characters")
    base = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    if not base:
        base = "attachment"
    if len(base) > MAX_NAME:
        stem, dot, ext = base.rpartition(".")
        keep = f".{ext}" if dot and 0 < len(ext) <= 16 else ""
        base = base[:MAX_NAME - len(keep)] + keep
    return base


def attach(*, tx: CaseTx, case_id: int, filename: str, content: bytes, content_type: str, actor: str, now_ns: int,
           max_bytes: int) -> Attachment:
    """Keeps a file on the case by its SHA-256 and size; the uploaded name is only display text."""
    case = _get(tx, case_id)
    assert case.id is not None
    if len(content) > max_bytes:
        raise CaseError(413, f"the file is {len(content)} bytes; the limit is {max_bytes} bytes")
    if not content:
        raise CaseError(422, "the file is empty")
    shown = safe_display_name(filename or "")
    kind = content_type if _CONTENT_TYPE.match(content_type or "") else "application/octet-stream"
    made = tx.add_attachment(Attachment(case.id, shown, hashlib.sha256(content).hexdigest(), len(content), kind,
                                        actor, now_ns), content)
    _log(tx, case, actor=actor, now_ns=now_ns, action="attach", before={},
         after={"attachment_id": made.id, "name": shown, "sha256": made.sha256, "size": made.size})
    return made


def _registry_agreement(tx: Any, record_id: Any) -> dict[str, Any]:
    """A signed agreement on record (collector/agreements), as HR's agreement record takes it; 422 if it backs nothing."""
    from collector.agreements.service import AgreementError, record_for_case

    text = str(record_id).strip()
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 2**63):
        raise CaseError(422, "choose a signed agreement on record")
    try:
        return record_for_case(tx, int(text))
    except AgreementError as exc:
        raise CaseError(exc.status, str(exc)) from exc


def record_hr(*, tx: CaseTx, case_id: int, kind: str, data: Mapping[str, Any], actor: str, role: str,
              now_ns: int) -> HrRecord:
    """Records one of HR's records (loss, agreement, employee, notice, appeal, decision) after checking it."""
    case = _get(tx, case_id)
    assert case.id is not None
    if not allowed(role, "cases:hr"):
        raise CaseError(403, f"role {role!r} may not record HR's records")
    editable = case.state in HR_EDITABLE or (kind == HrKind.APPEAL.value and case.state == CaseState.HR_CONFIRMED.value)
    if case.state == CaseState.SENT_TO_PAYROLL.value:
        handoffs = tx.handoffs(case.id)
        editable = bool(handoffs) and handoffs[-1].state == HandoffState.REFUSED.value
    if not editable:
        raise CaseError(409, f"HR's records cannot be changed while the case is {case.state}"
                        + (" and its hand-off is not refused" if case.state == CaseState.SENT_TO_PAYROLL.value else ""))
    history = tx.case_history(case.id)
    why = four_eyes_violation(step_for("security_confirmed", "hr_confirmed") or _never(), actor, history)
    if why:
        raise CaseError(409, why)
    records = tx.hr_records(case.id)
    current = hr.current_records(records)
    if kind == HrKind.AGREEMENT.value and data.get("agreement_record_id") not in (None, ""):
        data = {**data, "registry": _registry_agreement(tx, data["agreement_record_id"])}
    try:
        data_kept = hr.check_record(kind=kind, data=data, case=case, attachments=tx.list_attachments(case.id),
                                    current=current, now_ns=now_ns)
    except hr.HrInputError as exc:
        raise CaseError(422, str(exc)) from exc
    made = tx.add_hr_record(HrRecord(case.id, kind, data_kept, actor, now_ns))
    before = dict(current[kind].data) if kind in current else {}
    shown = dict(data_kept)
    if kind == HrKind.EMPLOYEE.value:  # history and audit are read widely: the real name stays in HR's record
        before.pop("name", None)
        shown.pop("name", None)
    _log(tx, case, actor=actor, now_ns=now_ns, action=f"hr.{kind}", before=before, after=shown)
    return made
