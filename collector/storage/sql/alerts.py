"""SQL for alerts, their appended evidence, and suppressions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.alerts.models import Alert, Suppression
from collector.domain.records import Page
from collector.storage.base import AlreadyExists
from collector.storage.sql.schema import alert_evidence, alerts, suppressions

__all__ = ["AlertsSql"]


class AlertsSql:
    """The alert area."""

    _conn: Connection

    # --- alerts -------------------------------------------------------------------------------
    def add_alert(self, alert: Alert) -> Alert:
        """Stores a new alert and its first evidence; returns it with its id."""
        row = _alert_row(alert)
        row.pop("id")
        row["evidence_count"] = 0
        try:
            with self._conn.begin_nested():
                new_id = int(self._conn.execute(alerts.insert().values(**row).returning(alerts.c.id)).scalar_one())
        except IntegrityError as exc:
            raise AlreadyExists(f"an open alert of group {alert.group_key!r} exists") from exc
        added = self.add_evidence(alert_id=new_id, event_ids=alert.event_ids)
        if added:
            self._conn.execute(alerts.update().where(alerts.c.id == new_id).values(evidence_count=added))
        return replace(alert, id=new_id, evidence_count=added, event_ids=tuple(dict.fromkeys(alert.event_ids)))

    def update_alert(self, alert: Alert) -> None:
        """Overwrites a stored alert's fields (its evidence is only ever appended, by add_evidence)."""
        row = _alert_row(alert)
        row.pop("event_ids")
        self._conn.execute(alerts.update().where(alerts.c.id == alert.id).values(**row))

    def add_evidence(self, *, alert_id: int, event_ids: Sequence[str]) -> int:
        """Appends the events an alert does not hold yet; returns how many were new."""
        wanted = list(dict.fromkeys(event_ids))
        if not wanted:
            return 0
        held: set[str] = set()
        for i in range(0, len(wanted), 500):
            held.update(self._conn.execute(sa.select(alert_evidence.c.event_id).where(
                alert_evidence.c.alert_id == alert_id, alert_evidence.c.event_id.in_(wanted[i:i + 500]))).scalars())
        new = [e for e in wanted if e not in held]
        if not new:
            return 0
        start = self._conn.execute(sa.select(sa.func.coalesce(sa.func.max(alert_evidence.c.n), -1))
                                   .where(alert_evidence.c.alert_id == alert_id)).scalar_one() + 1
        self._conn.execute(alert_evidence.insert(), [dict(alert_id=alert_id, n=start + i, event_id=e)
                                                     for i, e in enumerate(new)])
        return len(new)

    def _with_evidence(self, found: list[Alert]) -> list[Alert]:
        if not found:
            return found
        ids = [a.id for a in found]
        held: dict[int, list[str]] = {}
        for r in self._conn.execute(sa.select(alert_evidence.c.alert_id, alert_evidence.c.event_id)
                                    .where(alert_evidence.c.alert_id.in_(ids))
                                    .order_by(alert_evidence.c.alert_id, alert_evidence.c.n)):
            held.setdefault(r.alert_id, []).append(r.event_id)
        return [replace(a, event_ids=tuple(held.get(a.id or 0, ()))) for a in found]

    def get_alert(self, alert_id: int) -> Alert | None:
        """Gets an alert by its id, with its evidence."""
        row = self._conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first()
        return None if row is None else self._with_evidence([_alert_from(row)])[0]

    def latest_open_alert(self, *, rule: str, user: str | None = None, agent_id: str | None = None) -> Alert | None:
        """Gets the most recently updated open alert of a rule for a user and/or an agent."""
        query = (sa.select(alerts).where(alerts.c.rule == rule, alerts.c.status == "open")
                 .order_by(alerts.c.updated_at_ns.desc(), alerts.c.id.desc()).limit(1))
        if user is not None:
            query = query.where(alerts.c.user_name == user)
        if agent_id is not None:
            query = query.where(alerts.c.agent_id == agent_id)
        row = self._conn.execute(query).first()
        return None if row is None else self._with_evidence([_alert_from(row)])[0]

    def open_alert_in_group(self, group_key: str) -> Alert | None:
        """Gets the open alert of a group, if any, without its evidence (``evidence_count`` says how much)."""
        row = self._conn.execute(sa.select(alerts).where(alerts.c.group_key == group_key, alerts.c.status == "open")
                                 .order_by(alerts.c.id.desc()).limit(1)).first()
        return None if row is None else _alert_from(row)

    def list_alerts(self, *, cursor: int | None, limit: int, status: str | None = None) -> Page:
        """Lists alerts, newest first, after the cursor, with their evidence."""
        query = sa.select(alerts).order_by(alerts.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(alerts.c.id < cursor)
        if status is not None:
            query = query.where(alerts.c.status == status)
        rows = self._conn.execute(query).all()
        items = tuple(self._with_evidence([_alert_from(r) for r in rows[:limit]]))
        return Page(items, str(items[-1].id) if len(rows) > limit and items else None)

    def count_alerts(self) -> dict[str, int]:
        """Alerts by rule."""
        rows = self._conn.execute(sa.select(alerts.c.rule, sa.func.count()).group_by(alerts.c.rule)).all()
        return {r[0]: int(r[1]) for r in rows}

    # --- suppressions ---------------------------------------------------------------------------
    def add_suppression(self, s: Suppression) -> Suppression:
        """Stores a suppression and returns it with its id."""
        new_id = self._conn.execute(suppressions.insert().values(
            rule=s.rule, owner=s.owner, reason=s.reason, created_at_ns=s.created_at_ns, expires_at_ns=s.expires_at_ns,
            user_name=s.user, path_glob=s.path_glob, hits=0).returning(suppressions.c.id)).scalar_one()
        return replace(s, id=int(new_id))

    def list_suppressions(self, *, active_at_ns: int | None = None) -> Sequence[Suppression]:
        """Lists suppressions, newest first; only those in force at ``active_at_ns`` when given."""
        query = sa.select(suppressions).order_by(suppressions.c.id.desc())
        if active_at_ns is not None:
            query = query.where(suppressions.c.lifted_at_ns.is_(None), suppressions.c.expires_at_ns > active_at_ns)
        return [Suppression(r.rule, r.owner, r.reason, r.created_at_ns, r.expires_at_ns, r.user_name, r.path_glob,
                            r.hits, r.last_hit_ns, r.lifted_at_ns, r.id) for r in self._conn.execute(query).all()]

    def count_suppressed(self, *, suppression_id: int, hits: int, at_ns: int) -> None:
        """Counts findings a suppression kept from becoming alerts."""
        self._conn.execute(suppressions.update().where(suppressions.c.id == suppression_id)
                           .values(hits=suppressions.c.hits + hits, last_hit_ns=at_ns))

    def lift_suppression(self, *, suppression_id: int, now_ns: int) -> bool:
        """Ends a suppression before its expiry; returns whether one was in force."""
        res = self._conn.execute(suppressions.update().where(suppressions.c.id == suppression_id,
                                                             suppressions.c.lifted_at_ns.is_(None))
                                 .values(lifted_at_ns=now_ns))
        return bool(res.rowcount)


def _alert_row(a: Alert) -> dict[str, Any]:
    return dict(id=a.id, rule=a.rule, severity=a.severity, status=a.status, user_name=a.user, agent_id=a.agent_id,
                created_at_ns=a.created_at_ns, updated_at_ns=a.updated_at_ns, event_ids="[]",
                summary=a.summary, last_event_ns=a.last_event_ns, occurrences=a.occurrences, group_key=a.group_key,
                evidence_count=a.evidence_count, outcome=a.outcome)


def _alert_from(r: Any) -> Alert:
    return Alert(rule=r.rule, severity=r.severity, status=r.status, user=r.user_name, agent_id=r.agent_id,
                 created_at_ns=r.created_at_ns, updated_at_ns=r.updated_at_ns, event_ids=(),
                 summary=r.summary, last_event_ns=r.last_event_ns, id=r.id, occurrences=r.occurrences,
                 group_key=r.group_key, evidence_count=r.evidence_count, outcome=r.outcome)
