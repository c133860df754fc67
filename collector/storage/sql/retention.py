"""SQL for retention (collector/retention): legal holds, the pruning of each kind of record, audit anchors.

Each ``prune_*`` deletes at most ``limit`` records in the caller's transaction and records its run
(``retention_runs``: kind, cutoff, deleted, held and why). Events keep their batch row and Merkle leaf
(only the events and the signed bytes go); the audit log loses a prefix and gains an anchor at the cut.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from collector.retention.models import AuditAnchor, CaseHold, LegalHold, RetentionRun, covers_span
from collector.storage.sql.schema import (alert_evidence, alerts, audit_anchors, audit_head, audit_log, batches,
                                         case_alerts, case_attachments, case_blobs, case_comments, case_history,
                                         case_hr_records, cases, events, legal_holds, notify_outbox, payroll_outbox,
                                         retention_runs, tree_leaves)

__all__ = ["RetentionSql"]

_CASE_DONE = ("closed", "dismissed")  # a case in any other state holds its records


class RetentionSql:
    """The retention area."""

    _conn: Connection

    # --- legal holds ----------------------------------------------------------------------------
    def add_legal_hold(self, hold: LegalHold) -> LegalHold:
        """Stores a legal hold and returns it with its id."""
        new_id = self._conn.execute(legal_holds.insert().values(
            reason=hold.reason, created_by=hold.created_by, created_at_ns=hold.created_at_ns, since_ns=hold.since_ns,
            until_ns=hold.until_ns, user_name=hold.user, agent_id=hold.agent_id, released_at_ns=hold.released_at_ns,
        ).returning(legal_holds.c.id)).scalar_one()
        return replace(hold, id=int(new_id))

    def release_legal_hold(self, *, hold_id: int, now_ns: int) -> bool:
        """Releases an active hold; returns whether there was one."""
        res = self._conn.execute(legal_holds.update()
                                 .where(legal_holds.c.id == hold_id, legal_holds.c.released_at_ns.is_(None))
                                 .values(released_at_ns=now_ns))
        return bool(res.rowcount)

    def list_legal_holds(self, *, active_only: bool = True) -> Sequence[LegalHold]:
        """Lists legal holds, oldest first."""
        query = sa.select(legal_holds).order_by(legal_holds.c.id)
        if active_only:
            query = query.where(legal_holds.c.released_at_ns.is_(None))
        return [LegalHold(r.reason, r.created_by, r.created_at_ns, r.since_ns, r.until_ns, r.user_name, r.agent_id,
                          r.released_at_ns, r.id) for r in self._conn.execute(query).all()]

    # --- runs -----------------------------------------------------------------------------------
    def _record_run(self, run: RetentionRun) -> RetentionRun:
        new_id = self._conn.execute(retention_runs.insert().values(
            at_ns=run.at_ns, before_ns=run.before_ns, batches=run.batches, events=run.events,
            held_batches=run.held_batches, kind=run.kind, records=run.records, held=run.held,
            held_why=json.dumps(dict(run.held_why), sort_keys=True, ensure_ascii=False),
        ).returning(retention_runs.c.id)).scalar_one()
        return replace(run, id=int(new_id))

    def list_retention_runs(self) -> Sequence[RetentionRun]:
        """Lists retention runs of every kind, oldest first."""
        rows = self._conn.execute(sa.select(retention_runs).order_by(retention_runs.c.id)).all()
        return [RetentionRun(r.at_ns, r.before_ns, r.batches, r.events, r.held_batches, r.id, kind=r.kind,
                             records=r.records, held=r.held, held_why=json.loads(r.held_why)) for r in rows]

    # --- events -----------------------------------------------------------------------------------
    def prune_batches(self, *, before_ns: int, now_ns: int, limit: int, after_row_id: int = 0,
                      held_cases: Sequence[int] = ()) -> RetentionRun:
        """Deletes the events of unheld batches received before ``before_ns``; keeps hashes and signatures."""
        holds = self.list_legal_holds()
        candidates = self._conn.execute(
            sa.select(batches.c.row_id, batches.c.agent_id, batches.c.epoch, batches.c.first_seq, batches.c.last_seq)
            .where(batches.c.received_at_ns < before_ns, batches.c.pruned_at_ns.is_(None),
                   batches.c.row_id > after_row_id,
                   # only what a signed tree head already covers: its leaf hash keeps it verifiable
                   sa.exists().where(tree_leaves.c.batch_row_id == batches.c.row_id))
            .order_by(batches.c.row_id).limit(limit)
        ).all()
        pruned = held = deleted = 0
        why: dict[str, int] = {}
        for b in candidates:
            in_batch = sa.and_(events.c.agent_id == b.agent_id, events.c.epoch == b.epoch,
                               events.c.seq.between(b.first_seq, b.last_seq))
            reason = self._batch_hold(in_batch, holds, held_cases)
            if reason is not None:
                held += 1
                why[reason] = why.get(reason, 0) + 1
                continue
            deleted += self._conn.execute(events.delete().where(in_batch)).rowcount
            self._conn.execute(batches.update().where(batches.c.row_id == b.row_id)
                               .values(canonical=b"", pruned_at_ns=now_ns))
            pruned += 1
        return self._record_run(RetentionRun(now_ns, before_ns, pruned, deleted, held, records=pruned, held=held,
                                             held_why=why,
                                             last_row_id=candidates[-1].row_id if candidates else after_row_id))

    def _batch_hold(self, in_batch: Any, holds: Sequence[LegalHold], held_cases: Sequence[int]) -> str | None:
        """Why a batch is held (the first hold or case that covers one of its events), or None."""
        for h in holds:
            if self._conn.execute(sa.select(sa.literal(1)).where(in_batch, _held(h)).limit(1)).first():
                return f"legal hold #{h.id}"
        if held_cases:
            found = self._conn.execute(
                sa.select(sa.func.min(case_alerts.c.case_id))
                .select_from(events.join(alert_evidence, alert_evidence.c.event_id == events.c.event_id)
                             .join(case_alerts, case_alerts.c.alert_id == alert_evidence.c.alert_id))
                .where(in_batch, case_alerts.c.case_id.in_(sorted(held_cases)))).scalar()
            if found is not None:
                return f"case #{found}"
        return None

    # --- cases and alerts -------------------------------------------------------------------------
    def case_holds(self, *, payroll_since_ns: int) -> Sequence[CaseHold]:
        """Open cases, and cases handed to payroll since ``payroll_since_ns``."""
        paid = sa.exists().where(payroll_outbox.c.case_id == cases.c.id,
                                 payroll_outbox.c.created_at_ns >= payroll_since_ns)
        rows = self._conn.execute(
            sa.select(cases.c.id, cases.c.subject_user, cases.c.state, cases.c.created_at_ns)
            .where(sa.or_(cases.c.state.not_in(_CASE_DONE), paid)).order_by(cases.c.id)).all()
        return [CaseHold(r.id, r.subject_user, "payroll" if r.state in _CASE_DONE else "open", r.created_at_ns)
                for r in rows]

    def prune_alerts(self, *, before_ns: int, now_ns: int, limit: int, after_id: int = 0) -> RetentionRun:
        """Deletes old alerts no case holds and no hold covers, with their evidence lists."""
        holds = self.list_legal_holds()
        in_case = sa.select(sa.func.min(case_alerts.c.case_id)).where(
            case_alerts.c.alert_id == alerts.c.id).scalar_subquery()
        rows = self._conn.execute(
            sa.select(alerts.c.id, alerts.c.user_name, alerts.c.agent_id, alerts.c.created_at_ns,
                      alerts.c.last_event_ns, in_case.label("case_id"))
            .where(alerts.c.id > after_id, alerts.c.updated_at_ns < before_ns)
            .order_by(alerts.c.id).limit(limit)).all()
        gone: list[int] = []
        why: dict[str, int] = {}
        for r in rows:
            reason = (f"case #{r.case_id}" if r.case_id is not None else
                      next((f"legal hold #{h.id}" for h in holds if covers_span(
                          h, user=r.user_name, agent_id=r.agent_id, since_ns=r.created_at_ns,
                          until_ns=max(r.last_event_ns, r.created_at_ns))), None))
            if reason is None:
                gone.append(r.id)
            else:
                why[reason] = why.get(reason, 0) + 1
        deleted = 0
        if gone:
            self._conn.execute(alert_evidence.delete().where(alert_evidence.c.alert_id.in_(gone)))
            deleted = self._conn.execute(alerts.delete().where(alerts.c.id.in_(gone))).rowcount
        return self._record_run(RetentionRun(now_ns, before_ns, 0, 0, 0, kind="alerts", records=deleted,
                                             held=sum(why.values()), held_why=why,
                                             last_row_id=rows[-1].id if rows else after_id))

    def prune_cases(self, *, before_ns: int, payroll_since_ns: int, now_ns: int, limit: int,
                    after_id: int = 0) -> RetentionRun:
        """Deletes old closed or dismissed cases with everything on them, unless payroll or a hold keeps them."""
        holds = self.list_legal_holds()
        paid = sa.exists().where(payroll_outbox.c.case_id == cases.c.id,
                                 payroll_outbox.c.created_at_ns >= payroll_since_ns)
        rows = self._conn.execute(
            sa.select(cases.c.id, cases.c.state, cases.c.subject_user, cases.c.created_at_ns, cases.c.updated_at_ns,
                      paid.label("paid"))
            .where(cases.c.id > after_id, cases.c.updated_at_ns < before_ns).order_by(cases.c.id).limit(limit)).all()
        gone: list[int] = []
        why: dict[str, int] = {}
        deleted = 0
        for r in rows:
            reason = ("open" if r.state not in _CASE_DONE else "payroll minimum" if r.paid else
                      next((f"legal hold #{h.id}" for h in holds if covers_span(
                          h, user=r.subject_user, agent_id=None, since_ns=r.created_at_ns, until_ns=r.updated_at_ns)),
                           None))
            if reason is None:
                gone.append(r.id)
            else:
                why[reason] = why.get(reason, 0) + 1
        if gone:
            blobs = sa.select(case_attachments.c.sha256).where(case_attachments.c.case_id.in_(gone))
            shas = [s for (s,) in self._conn.execute(blobs.distinct()).all()]
            for table in (case_alerts, case_history, case_comments, case_attachments, case_hr_records, payroll_outbox):
                self._conn.execute(table.delete().where(table.c.case_id.in_(gone)))
            deleted = self._conn.execute(cases.delete().where(cases.c.id.in_(gone))).rowcount
            if shas:  # a file's content goes when no case names it any more
                self._conn.execute(case_blobs.delete().where(
                    case_blobs.c.sha256.in_(shas),
                    ~sa.exists().where(case_attachments.c.sha256 == case_blobs.c.sha256)))
        return self._record_run(RetentionRun(now_ns, before_ns, 0, 0, 0, kind="cases", records=deleted,
                                             held=sum(why.values()), held_why=why,
                                             last_row_id=rows[-1].id if rows else after_id))

    # --- notifications ------------------------------------------------------------------------------
    def prune_notifications(self, *, before_ns: int, now_ns: int, limit: int) -> RetentionRun:
        """Deletes old sent or failed outbox rows."""
        n = notify_outbox.c
        ids = [i for (i,) in self._conn.execute(
            sa.select(n.id).where(n.created_at_ns < before_ns, n.status.in_(("sent", "failed")))
            .order_by(n.id).limit(limit)).all()]
        if ids:
            self._conn.execute(notify_outbox.delete().where(n.id.in_(ids)))
        waiting = 0
        if len(ids) < limit:
            waiting = int(self._conn.execute(sa.select(sa.func.count()).select_from(notify_outbox).where(
                n.created_at_ns < before_ns, n.status.not_in(("sent", "failed")))).scalar_one())
        return self._record_run(RetentionRun(now_ns, before_ns, 0, 0, 0, kind="notifications", records=len(ids),
                                             held=waiting, held_why={"not delivered yet": waiting} if waiting else {}))

    # --- audit ------------------------------------------------------------------------------------
    def prune_audit(self, *, before_ns: int, now_ns: int, held_why: Mapping[str, int]) -> RetentionRun:
        """Cuts the oldest rows before ``before_ns`` off the audit log, with an anchor at the cut."""
        a = audit_log.c
        # the chain's head lock, as appending takes it: two collectors cutting at once take turns
        self._conn.execute(sa.select(audit_head.c.id).where(audit_head.c.id == 1).with_for_update()).first()
        first_kept = self._conn.execute(sa.select(sa.func.min(a.id)).where(a.at_ns >= before_ns)).scalar()
        query = sa.select(a.id, a.row_hash).order_by(a.id.desc()).limit(1)
        if first_kept is not None:
            query = query.where(a.id < first_kept)
        last = self._conn.execute(query).first()
        n = 0
        if last is not None:
            n = int(self._conn.execute(sa.select(sa.func.count()).select_from(audit_log)
                                       .where(a.id <= last.id)).scalar_one())
            before = self.latest_audit_anchor()
            # the anchor first: the delete trigger lets only rows at or below the newest anchor go
            self._conn.execute(audit_anchors.insert().values(
                at_ns=now_ns, cut_id=last.id, cut_hash=last.row_hash, rows=(before.rows if before else 0) + n,
                before_ns=before_ns))
            self._conn.execute(audit_log.delete().where(a.id <= last.id))
        return self._record_run(RetentionRun(now_ns, before_ns, 0, 0, 0, kind="audit", records=n, held=0,
                                             held_why=dict(held_why)))

    def latest_audit_anchor(self) -> AuditAnchor | None:
        """The newest cut of the audit log."""
        r = self._conn.execute(sa.select(audit_anchors).order_by(audit_anchors.c.id.desc()).limit(1)).first()
        return None if r is None else AuditAnchor(r.at_ns, r.cut_id, r.cut_hash, r._mapping["rows"], r.before_ns, r.id)


def _held(h: LegalHold) -> Any:
    parts = [events.c.time_ns >= h.since_ns, events.c.time_ns <= h.until_ns]
    if h.user is not None:
        parts.append(events.c.user_name == h.user)
    if h.agent_id is not None:
        parts.append(events.c.agent_id == h.agent_id)
    return sa.and_(*parts)
