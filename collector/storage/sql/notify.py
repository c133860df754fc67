"""SQL for the notification outbox (WeCom group robots, email): positions, outbox rows, recent sends.

Reading alerts by id after a position is only safe if no smaller id can still commit later. SQLite's
BEGIN IMMEDIATE lets one writer at a time, so ids commit in order; on PostgreSQL sequence values are
handed out before commit, so ``alerts_after`` first takes a SHARE lock on the table, which waits for
every insert in flight (and holds new ones back for the few milliseconds the read takes). The same
holds for case history, read by ``case_history_settled`` before the cases area's ``case_changes_after``.
The two are read in separate transactions (never both locks at once: a request writing both tables
could otherwise deadlock with the reader).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from collector.domain.records import Page
from collector.notify.models import AlertFact, Notification
from collector.storage.sql.schema import alerts, notify_outbox, notify_positions, notify_sends

__all__ = ["NotifySql"]

_DUE = ("pending", "sending")
_COLUMNS = tuple(f.name for f in fields(Notification))


def _row(n: Notification) -> dict[str, Any]:
    row = {name: getattr(n, name) for name in _COLUMNS}
    row.pop("id")
    return row


def _from(r: Any) -> Notification:
    return Notification(**{name: getattr(r, name) for name in _COLUMNS})


class NotifySql:
    """The notification area."""

    _conn: Connection
    _dialect: str

    def _settle(self, table: str) -> None:
        if self._dialect == "postgresql":
            self._conn.exec_driver_sql(f"LOCK TABLE {table} IN SHARE MODE")

    def alerts_after(self, *, after_id: int, limit: int) -> Sequence[AlertFact]:
        """Alerts with an id above after_id, in id order, as (id, rule, severity), none still in flight."""
        self._settle("alerts")
        rows = self._conn.execute(sa.select(alerts.c.id, alerts.c.rule, alerts.c.severity)
                                  .where(alerts.c.id > after_id).order_by(alerts.c.id).limit(limit))
        return [AlertFact(int(r.id), r.rule, r.severity) for r in rows]

    def case_history_settled(self) -> None:
        """Waits for case history rows in flight (PostgreSQL), so case changes are read without a gap."""
        self._settle("case_history")

    def notify_position(self, source: str) -> int:
        """The id up to which a source was turned into notifications."""
        found = self._conn.execute(sa.select(notify_positions.c.after_id)
                                   .where(notify_positions.c.source == source)).scalar()
        return 0 if found is None else int(found)

    def set_notify_position(self, *, source: str, after_id: int) -> None:
        """Records a source's position."""
        done = self._conn.execute(notify_positions.update().where(notify_positions.c.source == source)
                                  .values(after_id=after_id))
        if done.rowcount == 0:
            self._conn.execute(notify_positions.insert().values(source=source, after_id=after_id))

    def add_notifications(self, rows: Sequence[Notification]) -> int:
        """Adds outbox rows, skipping those already there."""
        if not rows:
            return 0
        insert: Any = (pg_dialect.insert(notify_outbox) if self._dialect == "postgresql"
                       else sqlite_dialect.insert(notify_outbox))
        added = 0
        for n in rows:
            added += len(self._conn.execute(insert.values(**_row(n)).on_conflict_do_nothing(
                index_elements=["target", "kind", "source_id"]).returning(notify_outbox.c.id)).all())
        return added

    def due_notifications(self, *, target: str, now_ns: int, limit: int) -> Sequence[Notification]:
        """A target's rows due by now, oldest first."""
        rows = self._conn.execute(sa.select(notify_outbox).where(
            notify_outbox.c.target == target, notify_outbox.c.status.in_(_DUE),
            notify_outbox.c.next_attempt_ns <= now_ns).order_by(notify_outbox.c.id).limit(limit))
        return [_from(r) for r in rows]

    def claim_notifications(self, *, ids: Sequence[int], delivery_id: int, now_ns: int, lease_until_ns: int) -> int:
        """Leases due rows for one delivery."""
        if not ids:
            return 0
        done = self._conn.execute(notify_outbox.update().where(
            notify_outbox.c.id.in_(list(ids)), notify_outbox.c.status.in_(_DUE),
            notify_outbox.c.next_attempt_ns <= now_ns).values(
            status="sending", attempts=notify_outbox.c.attempts + 1, next_attempt_ns=lease_until_ns,
            delivery_id=delivery_id))
        return int(done.rowcount)

    def finish_notifications(self, *, ids: Sequence[int], status: str, now_ns: int, next_attempt_ns: int,
                             error: str | None) -> None:
        """Records a delivery's result on its rows still sending."""
        if not ids:
            return
        values: dict[str, Any] = dict(status=status, next_attempt_ns=next_attempt_ns, last_error=error)
        if status == "sent":
            values["sent_at_ns"] = now_ns
        self._conn.execute(notify_outbox.update().where(
            notify_outbox.c.id.in_(list(ids)), notify_outbox.c.status == "sending").values(**values))

    def record_send(self, *, target: str, at_ns: int, keep_since_ns: int) -> None:
        """Records one message sent to a target and forgets older sends."""
        self._conn.execute(notify_sends.delete().where(notify_sends.c.target == target,
                                                       notify_sends.c.at_ns < keep_since_ns))
        self._conn.execute(notify_sends.insert().values(target=target, at_ns=at_ns))

    def recent_sends(self, *, target: str, since_ns: int) -> Sequence[int]:
        """When messages went to a target since since_ns, oldest first."""
        return [int(t) for t in self._conn.execute(
            sa.select(notify_sends.c.at_ns).where(notify_sends.c.target == target, notify_sends.c.at_ns >= since_ns)
            .order_by(notify_sends.c.at_ns)).scalars()]

    def list_notifications(self, *, cursor: int | None, limit: int, status: str | None = None) -> Page:
        """Outbox rows, newest first, after the cursor."""
        query = sa.select(notify_outbox).order_by(notify_outbox.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(notify_outbox.c.id < cursor)
        if status is not None:
            query = query.where(notify_outbox.c.status == status)
        rows = self._conn.execute(query).all()
        items = tuple(_from(r) for r in rows[:limit])
        return Page(items, str(items[-1].id) if len(rows) > limit and items else None)

    def count_notifications(self) -> dict[tuple[str, str], int]:
        """Outbox rows by (channel, status)."""
        rows = self._conn.execute(sa.select(notify_outbox.c.channel, notify_outbox.c.status, sa.func.count())
                                  .group_by(notify_outbox.c.channel, notify_outbox.c.status))
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def claim_notify(self) -> bool:
        """Takes the notification lock for this transaction; False if another collector holds it."""
        if self._dialect != "postgresql":
            return True  # SQLite's BEGIN IMMEDIATE already serializes every writer
        return bool(self._conn.exec_driver_sql("SELECT pg_try_advisory_xact_lock(7242009)").scalar())
