"""Retention: legal holds (each audited) and the run that deletes each kind of record past its period.

A run (``run_retention``) takes the kinds in this order, each in chunks of its own transactions:
cases (closed or dismissed, not handed to payroll within the statutory minimum), alerts (no case
holds them), events (batch by batch; a batch holding an event an open or payroll-kept case rests on
is held), notifications, and last the audit log (a prefix, cut no later than the creation of the
oldest case that holds records, so a held case keeps its whole trail). Every chunk records its
``RetentionRun``; every chunk that deleted or held something is audited (``retention.run``) in its
own transaction, and the audit cut's row names the anchor it left, so the cut is itself in the chain.
"""

from __future__ import annotations

from typing import Callable, Protocol

from collector.audit.models import AuditEntry
from collector.retention.models import CaseHold, LegalHold, RetentionPolicy, RetentionRun
from collector.storage.base import AuditArea, RetentionArea, Store, Transaction

__all__ = ["place_hold", "release_hold", "prune", "run_retention", "DAY_NS", "ACTOR"]

DAY_NS = 86_400 * 1_000_000_000
ACTOR = "retention"  # who the audit log names for a run started by the collector itself


class _HoldTx(RetentionArea, AuditArea, Protocol):
    """What placing and releasing holds needs."""


def place_hold(*, tx: _HoldTx, hold: LegalHold) -> LegalHold:
    """Places a legal hold, with its audit row."""
    if hold.until_ns < hold.since_ns:
        raise ValueError("a hold's end is before its start")
    if hold.user is None and hold.agent_id is None:
        raise ValueError("a hold names a user, an agent or both")
    if not hold.reason.strip():
        raise ValueError("a hold needs a reason: the case, request or order it is for")
    stored = tx.add_legal_hold(hold)
    tx.append_audit(AuditEntry(hold.created_at_ns, hold.created_by, "legal_hold.place", str(stored.id),
                               {"user": hold.user, "agent_id": hold.agent_id, "since_ns": hold.since_ns,
                                "until_ns": hold.until_ns, "reason": hold.reason}))
    return stored


def release_hold(*, tx: _HoldTx, hold_id: int, actor: str, now_ns: int) -> bool:
    """Releases a legal hold, with its audit row."""
    done = tx.release_legal_hold(hold_id=hold_id, now_ns=now_ns)
    tx.append_audit(AuditEntry(now_ns, actor, "legal_hold.release", str(hold_id), {"released": done}))
    return done


def _cutoff(now_ns: int, days: float) -> int:
    return now_ns - int(days * DAY_NS)


def _audit_run(tx: AuditArea, run: RetentionRun, actor: str, **extra: object) -> None:
    if run.records or run.held or extra:
        tx.append_audit(AuditEntry(run.at_ns, actor, "retention.run", run.kind, {
            "run": run.id, "before_ns": run.before_ns, "deleted": run.records, "events": run.events,
            "held": run.held, "held_why": dict(run.held_why), **extra}))


def _chunks(store: Store, step: Callable[[Transaction, int], RetentionRun], chunk: int, actor: str, *,
            paged: bool = True) -> list[RetentionRun]:
    """Runs ``step`` a transaction at a time from row 0 until a chunk looked at fewer than ``chunk`` rows
    (``paged=False``: until one deleted fewer, for a step that only looks at what it may delete)."""
    runs, after = [], 0
    while True:
        with store.transaction() as tx:
            run = step(tx, after)
            _audit_run(tx, run, actor)
        runs.append(run)
        after = run.last_row_id
        if run.records + (run.held if paged else 0) < chunk:
            return runs


def _held_case_ids(tx: RetentionArea, now_ns: int, payroll_days: float) -> list[int]:
    return [h.case_id for h in tx.case_holds(payroll_since_ns=_cutoff(now_ns, payroll_days))]


def prune(*, store: Store, retention_days: float, now_ns: int, chunk: int = 500,
          payroll_days: float = RetentionPolicy().payroll_days, actor: str = ACTOR) -> list[RetentionRun]:
    """Prunes every batch older than the retention that no hold or held case covers, a chunk per transaction."""
    before = _cutoff(now_ns, retention_days)
    return _chunks(store, lambda tx, after: tx.prune_batches(
        before_ns=before, now_ns=now_ns, limit=chunk, after_row_id=after,
        held_cases=_held_case_ids(tx, now_ns, payroll_days)), chunk, actor)


def _prune_audit(store: Store, *, days: float, payroll_days: float, now_ns: int, actor: str) -> RetentionRun:
    before = _cutoff(now_ns, days)
    why: dict[str, int] = {}
    with store.transaction() as tx:
        holding: list[CaseHold] = [h for h in tx.case_holds(payroll_since_ns=_cutoff(now_ns, payroll_days))
                                   if h.created_at_ns < before]
        if holding:  # a held case keeps its whole trail: cut no later than the oldest one's creation
            before = min(h.created_at_ns for h in holding)
            why = {h.label: 1 for h in holding}
        run = tx.prune_audit(before_ns=before, now_ns=now_ns, held_why=why)
        anchor = tx.latest_audit_anchor()
        extra = {"anchor_cut_id": anchor.cut_id, "anchor_cut_hash": anchor.cut_hash,
                 "anchor_rows": anchor.rows} if run.records and anchor else {}
        _audit_run(tx, run, actor, **extra)
    return run


def run_retention(*, store: Store, policy: RetentionPolicy, now_ns: int, chunk: int = 500,
                  actor: str = ACTOR) -> list[RetentionRun]:
    """One retention run over every kind with a period; returns the runs recorded (one per chunk)."""
    problems = policy.problems()
    if problems:
        raise ValueError("; ".join(problems))
    runs: list[RetentionRun] = []
    if policy.cases_days is not None:
        before = _cutoff(now_ns, policy.cases_days)
        since = _cutoff(now_ns, policy.payroll_days)
        runs += _chunks(store, lambda tx, after: tx.prune_cases(
            before_ns=before, payroll_since_ns=since, now_ns=now_ns, limit=chunk, after_id=after), chunk, actor)
    if policy.alerts_days is not None:
        before_a = _cutoff(now_ns, policy.alerts_days)
        runs += _chunks(store, lambda tx, after: tx.prune_alerts(
            before_ns=before_a, now_ns=now_ns, limit=chunk, after_id=after), chunk, actor)
    if policy.events_days is not None:
        runs += prune(store=store, retention_days=policy.events_days, now_ns=now_ns, chunk=chunk,
                      payroll_days=policy.payroll_days, actor=actor)
    if policy.notifications_days is not None:
        before_n = _cutoff(now_ns, policy.notifications_days)
        runs += _chunks(store, lambda tx, _after: tx.prune_notifications(
            before_ns=before_n, now_ns=now_ns, limit=chunk), chunk, actor, paged=False)
    if policy.audit_days is not None:
        runs.append(_prune_audit(store, days=policy.audit_days, payroll_days=policy.payroll_days, now_ns=now_ns,
                                 actor=actor))
    return runs
