"""SQL for cases: their history, comments, attachments, HR's records and the payroll outbox."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from collector.cases.models import Attachment, Case, CaseChange, Comment, Handoff, HistoryEntry, HrRecord
from collector.domain.records import Page
from collector.storage.base import AlreadyExists
from collector.storage.sql.schema import (alert_evidence, case_alerts, case_attachments, case_blobs, case_comments,
                                          case_history, case_hr_records, cases, events, payroll_outbox)

__all__ = ["CasesSql"]


class CasesSql:
    """The case area."""

    _conn: Connection

    def add_case(self, case: Case) -> Case:
        """Stores a new case with its alerts; returns it with its id."""
        row = _case_row(case)
        new_id = int(self._conn.execute(cases.insert().values(**row).returning(cases.c.id)).scalar_one())
        alert_ids = tuple(dict.fromkeys(case.alert_ids))
        if alert_ids:
            self._conn.execute(case_alerts.insert(), [dict(case_id=new_id, alert_id=a, n=i)
                                                      for i, a in enumerate(alert_ids)])
        return replace(case, id=new_id, alert_ids=alert_ids)

    def _alerts_of(self, ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
        held: dict[int, list[int]] = {}
        if ids:
            for r in self._conn.execute(sa.select(case_alerts.c.case_id, case_alerts.c.alert_id)
                                        .where(case_alerts.c.case_id.in_(list(ids)))
                                        .order_by(case_alerts.c.case_id, case_alerts.c.n)):
                held.setdefault(r.case_id, []).append(r.alert_id)
        return {k: tuple(v) for k, v in held.items()}

    def get_case(self, case_id: int) -> Case | None:
        """Gets a case by its id, with its alerts."""
        row = self._conn.execute(sa.select(cases).where(cases.c.id == case_id)).first()
        if row is None:
            return None
        return _case_from(row, self._alerts_of([case_id]).get(case_id, ()))

    def update_case(self, case: Case, *, only_from: str | None = None) -> bool:
        """Overwrites a case's fields but its alerts, if its state is still ``only_from`` (when given)."""
        q = cases.update().where(cases.c.id == case.id)
        if only_from is not None:  # re-checked under the row lock on PostgreSQL: of two concurrent steps one wins
            q = q.where(cases.c.state == only_from)
        return bool(self._conn.execute(q.values(**_case_row(case))).rowcount == 1)

    def list_cases(self, *, cursor: int | None, limit: int, state: str | None = None,
                   assignee: str | None = None) -> Page:
        """Cases, newest first, after the cursor."""
        q = sa.select(cases).order_by(cases.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            q = q.where(cases.c.id < cursor)
        if state is not None:
            q = q.where(cases.c.state == state)
        if assignee is not None:
            q = q.where(cases.c.assignee == assignee)
        rows = self._conn.execute(q).all()
        held = self._alerts_of([r.id for r in rows[:limit]])
        items = tuple(_case_from(r, held.get(r.id, ())) for r in rows[:limit])
        return Page(items, str(items[-1].id) if len(rows) > limit and items else None)

    def cases_for_alert(self, alert_id: int) -> Sequence[int]:
        """The ids of the cases holding an alert, oldest first."""
        return [int(i) for i in self._conn.execute(sa.select(case_alerts.c.case_id).where(
            case_alerts.c.alert_id == alert_id).order_by(case_alerts.c.case_id)).scalars()]

    def incident_first_ns(self, alert_ids: Sequence[int]) -> int | None:
        """The earliest stored event time among the alerts' evidence."""
        if not alert_ids:
            return None
        q = (sa.select(sa.func.min(events.c.time_ns))
             .select_from(alert_evidence.join(events, events.c.event_id == alert_evidence.c.event_id))
             .where(alert_evidence.c.alert_id.in_(list(alert_ids))))
        found = self._conn.execute(q).scalar()
        return None if found is None else int(found)

    def add_case_history(self, entry: HistoryEntry) -> HistoryEntry:
        """Appends one history row."""
        new_id = int(self._conn.execute(case_history.insert().values(
            case_id=entry.case_id, at_ns=entry.at_ns, actor=entry.actor, action=entry.action,
            from_state=entry.from_state, to_state=entry.to_state, before=_dump(entry.before),
            after=_dump(entry.after)).returning(case_history.c.id)).scalar_one())
        return replace(entry, id=new_id)

    def case_history(self, case_id: int) -> Sequence[HistoryEntry]:
        """A case's history, oldest first."""
        rows = self._conn.execute(sa.select(case_history).where(case_history.c.case_id == case_id)
                                  .order_by(case_history.c.id))
        return [HistoryEntry(r.case_id, r.at_ns, r.actor, r.action, r.from_state, r.to_state, json.loads(r.before),
                             json.loads(r.after), id=r.id) for r in rows]

    def case_changes_after(self, *, after_id: int, limit: int) -> Sequence[CaseChange]:
        """State changes after a history id, in id order."""
        rows = self._conn.execute(
            sa.select(case_history.c.id, case_history.c.case_id, case_history.c.from_state, case_history.c.to_state,
                      case_history.c.actor, case_history.c.at_ns)
            .where(case_history.c.id > after_id, case_history.c.to_state.is_not(None))
            .order_by(case_history.c.id).limit(limit))
        return [CaseChange(r.id, r.case_id, r.from_state, r.to_state, r.actor, r.at_ns) for r in rows]

    def add_comment(self, comment: Comment) -> Comment:
        """Stores a comment."""
        new_id = int(self._conn.execute(case_comments.insert().values(
            case_id=comment.case_id, author=comment.author, at_ns=comment.at_ns, body=comment.body)
            .returning(case_comments.c.id)).scalar_one())
        return replace(comment, id=new_id)

    def list_comments(self, case_id: int) -> Sequence[Comment]:
        """A case's comments, oldest first."""
        rows = self._conn.execute(sa.select(case_comments).where(case_comments.c.case_id == case_id)
                                  .order_by(case_comments.c.id))
        return [Comment(r.case_id, r.author, r.at_ns, r.body, id=r.id) for r in rows]

    def add_attachment(self, attachment: Attachment, content: bytes) -> Attachment:
        """Stores a file's record, and its content once per hash."""
        have = self._conn.execute(sa.select(case_blobs.c.sha256).where(
            case_blobs.c.sha256 == attachment.sha256)).first()
        if have is None:
            try:
                with self._conn.begin_nested():
                    self._conn.execute(case_blobs.insert().values(sha256=attachment.sha256, content=content))
            except IntegrityError:
                pass  # another transaction stored the same content meanwhile: it is the same bytes
        new_id = int(self._conn.execute(case_attachments.insert().values(
            case_id=attachment.case_id, display_name=attachment.display_name, sha256=attachment.sha256,
            size=attachment.size, content_type=attachment.content_type, uploaded_by=attachment.uploaded_by,
            uploaded_at_ns=attachment.uploaded_at_ns).returning(case_attachments.c.id)).scalar_one())
        return replace(attachment, id=new_id)

    def list_attachments(self, case_id: int) -> Sequence[Attachment]:
        """A case's files, oldest first."""
        rows = self._conn.execute(sa.select(case_attachments).where(case_attachments.c.case_id == case_id)
                                  .order_by(case_attachments.c.id))
        return [_attachment_from(r) for r in rows]

    def get_attachment(self, attachment_id: int) -> Attachment | None:
        """Gets a file's record."""
        row = self._conn.execute(sa.select(case_attachments).where(case_attachments.c.id == attachment_id)).first()
        return None if row is None else _attachment_from(row)

    def attachment_content(self, sha256: str) -> bytes | None:
        """A file's content by its hash."""
        found = self._conn.execute(sa.select(case_blobs.c.content).where(case_blobs.c.sha256 == sha256)).scalar()
        return None if found is None else bytes(found)

    def add_hr_record(self, record: HrRecord) -> HrRecord:
        """Stores one of HR's records."""
        new_id = int(self._conn.execute(case_hr_records.insert().values(
            case_id=record.case_id, kind=record.kind, data=_dump(record.data), recorded_by=record.recorded_by,
            recorded_at_ns=record.recorded_at_ns).returning(case_hr_records.c.id)).scalar_one())
        return replace(record, id=new_id)

    def hr_records(self, case_id: int) -> Sequence[HrRecord]:
        """HR's records on a case, oldest first."""
        rows = self._conn.execute(sa.select(case_hr_records).where(case_hr_records.c.case_id == case_id)
                                  .order_by(case_hr_records.c.id))
        return [HrRecord(r.case_id, r.kind, json.loads(r.data), r.recorded_by, r.recorded_at_ns, id=r.id)
                for r in rows]

    def add_handoff(self, handoff: Handoff) -> Handoff:
        """Writes an outbox row."""
        row = _handoff_row(handoff)
        row.update(case_id=handoff.case_id, number=handoff.number, payload=handoff.payload, sent_by=handoff.sent_by,
                   created_at_ns=handoff.created_at_ns)
        try:
            with self._conn.begin_nested():
                new_id = int(self._conn.execute(payroll_outbox.insert().values(**row)
                                                .returning(payroll_outbox.c.id)).scalar_one())
        except IntegrityError as exc:
            raise AlreadyExists(f"case {handoff.case_id} already has hand-off {handoff.number}") from exc
        return replace(handoff, id=new_id)

    def handoffs(self, case_id: int) -> Sequence[Handoff]:
        """A case's hand-offs, by number."""
        rows = self._conn.execute(sa.select(payroll_outbox).where(payroll_outbox.c.case_id == case_id)
                                  .order_by(payroll_outbox.c.number))
        return [_handoff_from(r) for r in rows]

    def claim_handoffs(self, *, now_ns: int, lease_ns: int, limit: int) -> Sequence[Handoff]:
        """Leases outbox rows with work due that no worker holds."""
        o = payroll_outbox.c
        due = (o.state.in_(["pending", "accepted"]), o.next_attempt_ns > 0, o.next_attempt_ns <= now_ns,
               o.lease_until_ns <= now_ns)
        rows = self._conn.execute(sa.select(payroll_outbox).where(*due).order_by(o.id).limit(limit)).all()
        out: list[Handoff] = []
        for r in rows:
            # the same conditions again: another collector may have leased it since the select
            got = self._conn.execute(payroll_outbox.update().where(o.id == r.id, *due).values(
                lease_until_ns=now_ns + lease_ns,
                attempts=o.attempts + (1 if r.state == "pending" else 0)))
            if got.rowcount == 1:
                h = _handoff_from(r)
                out.append(replace(h, lease_until_ns=now_ns + lease_ns,
                                   attempts=h.attempts + (1 if h.state == "pending" else 0)))
        return out

    def save_handoff(self, handoff: Handoff) -> None:
        """Records what happened to a hand-off."""
        self._conn.execute(payroll_outbox.update().where(payroll_outbox.c.id == handoff.id)
                           .values(**_handoff_row(handoff)))


def _dump(value: Any) -> str:
    return json.dumps(dict(value), ensure_ascii=False, sort_keys=True)


def _case_row(c: Case) -> dict[str, Any]:
    return dict(title=c.title, state=c.state, subject_user=c.subject_user, created_by=c.created_by,
                created_at_ns=c.created_at_ns, updated_at_ns=c.updated_at_ns, incident_first_ns=c.incident_first_ns,
                assignee=c.assignee)


def _case_from(r: Row[Any], alert_ids: tuple[int, ...]) -> Case:
    return Case(r.title, r.state, r.subject_user, r.created_by, r.created_at_ns, r.updated_at_ns, alert_ids,
                r.incident_first_ns, r.assignee, id=r.id)


def _attachment_from(r: Row[Any]) -> Attachment:
    return Attachment(r.case_id, r.display_name, r.sha256, r.size, r.content_type, r.uploaded_by, r.uploaded_at_ns,
                      id=r.id)


def _handoff_row(h: Handoff) -> dict[str, Any]:
    return dict(state=h.state, attempts=h.attempts, next_attempt_ns=h.next_attempt_ns, lease_until_ns=h.lease_until_ns,
                last_error=h.last_error, answered_at_ns=h.answered_at_ns, answer=_dump(h.answer),
                schedule=_dump(h.schedule), schedule_at_ns=h.schedule_at_ns)


def _handoff_from(r: Row[Any]) -> Handoff:
    return Handoff(r.case_id, r.number, r.payload, r.sent_by, r.created_at_ns, r.state, r.attempts, r.next_attempt_ns,
                   r.lease_until_ns, r.last_error, r.answered_at_ns, json.loads(r.answer), json.loads(r.schedule),
                   r.schedule_at_ns, id=r.id)
