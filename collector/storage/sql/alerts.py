"""SQL for alerts, their appended evidence, suppressions, and the queue (filters, sorts, groups, saved filters).

The queue is filtered, counted, sorted and paged here, in SQL over indexed columns (schema.py lists
the indexes), never in Python over every alert.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.alerts.models import SEVERITY_RANK, Alert, AlertQuery, SavedFilter, Suppression, UserGroup
from collector.domain.records import Page
from collector.events.models import StoredEvent
from collector.storage.base import AlreadyExists
from collector.storage.sql.batches import event_from_row
from collector.storage.sql.raw import RawCursor
from collector.storage.sql.schema import alert_evidence, alerts, events, saved_filters, suppressions

__all__ = ["AlertsSql"]

_ADD_EVIDENCE = ("INSERT INTO alert_evidence (alert_id, n, event_id) VALUES (?, ?, ?) "
                 "ON CONFLICT (alert_id, event_id) DO NOTHING")
# PostgreSQL: the same as one statement over an array (one round trip, not one per event id: a burst's
# thousands of evidence rows were most of detection's time there); duplicates are skipped alike
_ADD_EVIDENCE_PG = ("INSERT INTO alert_evidence (alert_id, n, event_id) "
                    "SELECT ?, ? + t.o - 1, t.e FROM unnest(?::text[]) WITH ORDINALITY AS t(e, o) "
                    "ON CONFLICT (alert_id, event_id) DO NOTHING")
# What detection runs for each finding it raises or folds into an open alert, on the driver's cursor (RawCursor):
# through SQLAlchemy's execution, building and compiling each statement cost more than the database.
_FIELDS = ("rule", "severity", "status", "user_name", "agent_id", "created_at_ns", "updated_at_ns", "summary",
           "last_event_ns", "occurrences", "group_key", "evidence_count", "outcome", "assignee")
_OPEN_IN_GROUP = (f"SELECT id, {', '.join(_FIELDS)} FROM alerts WHERE group_key = ? AND status = 'open' "
                  "ORDER BY id DESC LIMIT 1")
_UPDATE_ALERT = f"UPDATE alerts SET {', '.join(f'{c} = ?' for c in _FIELDS)}, severity_rank = ? WHERE id = ?"
_ADD_ALERT = (f"INSERT INTO alerts ({', '.join(_FIELDS)}, severity_rank, event_ids) "
              f"VALUES ({', '.join('?' * (len(_FIELDS) + 2))}) RETURNING id")


def _fields(a: Alert) -> tuple[Any, ...]:
    """An alert's values in ``_FIELDS`` order, then its severity's rank."""
    return (a.rule, a.severity, a.status, a.user, a.agent_id, a.created_at_ns, a.updated_at_ns, a.summary,
            a.last_event_ns, a.occurrences, a.group_key, a.evidence_count, a.outcome, a.assignee,
            SEVERITY_RANK.get(a.severity, 0))


class AlertsSql:
    """The alert area."""

    _conn: Connection
    _dialect: str
    _raw: RawCursor

    # --- alerts -------------------------------------------------------------------------------
    def add_alert(self, alert: Alert) -> Alert:
        """Stores a new alert and its first evidence; returns it with its id."""
        evidence = list(dict.fromkeys(alert.event_ids))
        # a new alert holds none yet: all of it is new
        params = (*_fields(replace(alert, evidence_count=len(evidence))), "[]")
        raw = self._raw
        # a savepoint, as begin_nested takes: on PostgreSQL a refused insert would end the transaction
        raw.run("SAVEPOINT shoumi_add_alert", ())
        try:
            row = raw.one(_ADD_ALERT, params)
        except self._conn.dialect.dbapi.IntegrityError as exc:  # type: ignore[union-attr]
            raw.run("ROLLBACK TO SAVEPOINT shoumi_add_alert", ())
            raw.run("RELEASE SAVEPOINT shoumi_add_alert", ())
            raise AlreadyExists(f"an open alert of group {alert.group_key!r} exists") from exc
        raw.run("RELEASE SAVEPOINT shoumi_add_alert", ())
        assert row is not None
        new_id = int(row[0])
        added = self._append_evidence(new_id, evidence, start=0) if evidence else 0
        if added != len(evidence):  # pragma: no cover - evidence rows left behind under a reused id
            self._conn.execute(alerts.update().where(alerts.c.id == new_id).values(evidence_count=added))
        return replace(alert, id=new_id, evidence_count=added, event_ids=tuple(evidence))

    def update_alert(self, alert: Alert) -> None:
        """Overwrites a stored alert's fields (its evidence is only ever appended, by add_evidence)."""
        params = (*_fields(alert), alert.id)
        try:
            self._raw.run(_UPDATE_ALERT, params)
        except self._conn.dialect.dbapi.IntegrityError as exc:  # type: ignore[union-attr]
            # the one unique key an update can break: one open alert per group
            raise AlreadyExists(f"another alert of group {alert.group_key!r} is open") from exc

    def update_alerts(self, changed: Sequence[Alert]) -> None:
        """Writes the triage fields of many alerts in one statement per 1,000 (executemany)."""
        statement = alerts.update().where(alerts.c.id == sa.bindparam("b_id")).values(
            status=sa.bindparam("b_status"), outcome=sa.bindparam("b_outcome"), assignee=sa.bindparam("b_assignee"),
            updated_at_ns=sa.bindparam("b_at"))
        rows = [dict(b_id=a.id, b_status=a.status, b_outcome=a.outcome, b_assignee=a.assignee, b_at=a.updated_at_ns)
                for a in changed]
        for i in range(0, len(rows), 1000):
            self._conn.execute(statement, rows[i:i + 1000])

    def add_evidence(self, *, alert_id: int, event_ids: Sequence[str]) -> int:
        """Appends the events an alert does not hold yet; returns how many were new."""
        wanted = list(dict.fromkeys(event_ids))
        if not wanted:
            return 0
        row = self._raw.one("SELECT MAX(n) FROM alert_evidence WHERE alert_id = ?", (alert_id,))
        return self._append_evidence(alert_id, wanted, start=0 if row is None or row[0] is None else int(row[0]) + 1)

    def _append_evidence(self, alert_id: int, event_ids: Sequence[str], *, start: int) -> int:
        """Inserts distinct event ids as evidence numbered from ``start`` in one executemany on the driver
        (row by row through SQLAlchemy this was most of detection's write time); those the alert already
        holds are skipped by the unique (alert_id, event_id), leaving gaps in ``n`` that keep the order."""
        if not event_ids:
            return 0
        if self._dialect == "postgresql":
            return self._raw.run(_ADD_EVIDENCE_PG, (alert_id, start, list(event_ids)))
        return self._raw.many(_ADD_EVIDENCE, [(alert_id, start + i, e) for i, e in enumerate(event_ids)])

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
        r = self._raw.one(_OPEN_IN_GROUP, (group_key,))
        if r is None:
            return None
        return Alert(rule=r[1], severity=r[2], status=r[3], user=r[4], agent_id=r[5], created_at_ns=r[6],
                     updated_at_ns=r[7], event_ids=(), summary=r[8], last_event_ns=r[9], id=r[0], occurrences=r[10],
                     group_key=r[11], evidence_count=r[12], outcome=r[13], assignee=r[14])

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

    # --- the queue ----------------------------------------------------------------------------------
    def query_alerts(self, q: AlertQuery, *, after: tuple[int, int] | None, limit: int) -> Page:
        """Alerts matching the query in its order after the cursor key, without their evidence."""
        query = _ordered(sa.select(alerts).where(*_where(q)), q, after).limit(limit + 1)
        rows = self._conn.execute(query).all()
        items = tuple(_alert_from(r) for r in rows[:limit])
        if len(rows) <= limit or not items:
            return Page(items, None)
        last = items[-1]
        key = {"severity": SEVERITY_RANK.get(last.severity, 0), "evidence": last.evidence_count}.get(q.sort)
        return Page(items, str(last.id) if key is None else f"{key}_{last.id}")

    def count_alerts_by(self, q: AlertQuery, *, field: str) -> dict[str, int]:
        """How many alerts match, by status, rule or severity."""
        column = {"status": alerts.c.status, "rule": alerts.c.rule, "severity": alerts.c.severity}[field]
        rows = self._conn.execute(sa.select(column, sa.func.count()).where(*_where(q)).group_by(column)).all()
        return {r[0]: int(r[1]) for r in rows}

    def alert_ids_matching(self, q: AlertQuery, *, limit: int) -> Sequence[int]:
        """The ids of up to ``limit`` matching alerts, in the query's order."""
        query = _ordered(sa.select(alerts.c.id).where(*_where(q)), q, None).limit(limit)
        return [int(x) for x in self._conn.execute(query).scalars()]

    def group_alerts_by_user(self, q: AlertQuery, *, offset: int, limit: int) -> Sequence[UserGroup]:
        """One row per user with their counts, most alerts first (GROUP BY on the user index)."""
        def count_if(cond: Any) -> Any:
            return sa.func.sum(sa.case((cond, 1), else_=0))

        total = sa.func.count().label("total")
        last = sa.func.max(alerts.c.created_at_ns).label("last")
        query = (sa.select(alerts.c.user_name, total, count_if(alerts.c.status == "open"),
                           count_if(alerts.c.status == "acknowledged"), count_if(alerts.c.status == "closed"),
                           count_if(alerts.c.severity_rank >= SEVERITY_RANK["high"]), last)
                 .where(alerts.c.user_name != "", *_where(q)).group_by(alerts.c.user_name)
                 .order_by(total.desc(), last.desc(), alerts.c.user_name).offset(offset).limit(limit))
        return [UserGroup(r[0], int(r[1]), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0), int(r[5] or 0), int(r[6]))
                for r in self._conn.execute(query).all()]

    def get_alerts(self, alert_ids: Sequence[int]) -> Sequence[Alert]:
        """These alerts, without evidence, in id order."""
        wanted = sorted(set(alert_ids))
        out: list[Alert] = []
        for i in range(0, len(wanted), 500):
            out += [_alert_from(r) for r in self._conn.execute(
                sa.select(alerts).where(alerts.c.id.in_(wanted[i:i + 500])).order_by(alerts.c.id))]
        return out

    def _evidence_join(self, alert_id: int) -> Any:
        return alert_evidence.join(events, events.c.event_id == alert_evidence.c.event_id), \
            alert_evidence.c.alert_id == alert_id

    def evidence_events(self, *, alert_id: int, after: tuple[int, int] | None, limit: int) -> Sequence[StoredEvent]:
        """An alert's stored evidence events in time order, after (time_ns, row_id)."""
        joined, cond = self._evidence_join(alert_id)
        query = sa.select(events).select_from(joined).where(cond)
        if after is not None:
            query = query.where(sa.or_(events.c.time_ns > after[0],
                                       sa.and_(events.c.time_ns == after[0], events.c.row_id > after[1])))
        query = query.order_by(events.c.time_ns, events.c.row_id).limit(limit)
        return [event_from_row(r) for r in self._conn.execute(query).all()]

    def count_stored_evidence(self, alert_id: int) -> int:
        """How many of an alert's evidence events are still stored."""
        joined, cond = self._evidence_join(alert_id)
        return int(self._conn.execute(sa.select(sa.func.count()).select_from(joined).where(cond)).scalar_one())

    def agent_events_between(self, *, agent_id: str, kinds: Sequence[str], since_ns: int, until_ns: int,
                             limit: int) -> Sequence[StoredEvent]:
        """An agent's events of these kinds in the window, oldest first (on the time index)."""
        query = (sa.select(events).where(events.c.time_ns >= since_ns, events.c.time_ns < until_ns,
                                         events.c.agent_id == agent_id, events.c.kind.in_(list(kinds)))
                 .order_by(events.c.time_ns, events.c.row_id).limit(limit))
        return [event_from_row(r) for r in self._conn.execute(query).all()]

    def alerts_of_agent(self, *, agent_id: str, rules: Sequence[str], since_ns: int, until_ns: int,
                        limit: int) -> Sequence[Alert]:
        """Alerts of these rules for an agent overlapping the window, oldest first."""
        query = (sa.select(alerts).where(alerts.c.agent_id == agent_id, alerts.c.rule.in_(list(rules)),
                                         alerts.c.created_at_ns < until_ns,
                                         sa.or_(alerts.c.last_event_ns >= since_ns, alerts.c.updated_at_ns >= since_ns))
                 .order_by(alerts.c.id).limit(limit))
        return [_alert_from(r) for r in self._conn.execute(query).all()]

    def add_saved_filter(self, f: SavedFilter) -> SavedFilter:
        """Stores a named filter; AlreadyExists if the owner has one of that name."""
        try:
            with self._conn.begin_nested():
                new_id = self._conn.execute(saved_filters.insert().values(
                    owner=f.owner, name=f.name, query=f.query, created_at_ns=f.created_at_ns)
                    .returning(saved_filters.c.id)).scalar_one()
        except IntegrityError as exc:
            raise AlreadyExists(f"a filter named {f.name!r} exists") from exc
        return replace(f, id=int(new_id))

    def list_saved_filters(self, owner: str) -> Sequence[SavedFilter]:
        """An owner's filters, by name."""
        rows = self._conn.execute(sa.select(saved_filters).where(saved_filters.c.owner == owner)
                                  .order_by(saved_filters.c.name, saved_filters.c.id)).all()
        return [SavedFilter(r.owner, r.name, r.query, r.created_at_ns, r.id) for r in rows]

    def delete_saved_filter(self, *, filter_id: int, owner: str) -> SavedFilter | None:
        """Deletes one of the owner's filters; returns it, or None."""
        row = self._conn.execute(sa.select(saved_filters).where(saved_filters.c.id == filter_id,
                                                                saved_filters.c.owner == owner)).first()
        if row is None:
            return None
        self._conn.execute(saved_filters.delete().where(saved_filters.c.id == filter_id))
        return SavedFilter(row.owner, row.name, row.query, row.created_at_ns, row.id)

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


def _alert_from(r: Any) -> Alert:
    return Alert(rule=r.rule, severity=r.severity, status=r.status, user=r.user_name, agent_id=r.agent_id,
                 created_at_ns=r.created_at_ns, updated_at_ns=r.updated_at_ns, event_ids=(),
                 summary=r.summary, last_event_ns=r.last_event_ns, id=r.id, occurrences=r.occurrences,
                 group_key=r.group_key, evidence_count=r.evidence_count, outcome=r.outcome, assignee=r.assignee)


def _where(q: AlertQuery) -> list[Any]:
    """The query's conditions; each is on an indexed column."""
    out: list[Any] = []
    if q.rules:
        out.append(alerts.c.rule.in_(q.rules))
    if q.severities:
        out.append(alerts.c.severity_rank.in_([SEVERITY_RANK.get(x, 0) for x in q.severities]))
    if q.statuses:
        out.append(alerts.c.status.in_(q.statuses))
    if q.user is not None:
        out.append(alerts.c.user_name == q.user)
    if q.agent_id is not None:
        out.append(alerts.c.agent_id == q.agent_id)
    if q.since_ns is not None:
        out.append(alerts.c.created_at_ns >= q.since_ns)
    if q.until_ns is not None:
        out.append(alerts.c.created_at_ns < q.until_ns)
    if q.assignee == "":
        out.append(alerts.c.assignee.is_(None))
    elif q.assignee is not None:
        out.append(alerts.c.assignee == q.assignee)
    return out


def _sort_column(sort: str) -> Any:
    return {"severity": alerts.c.severity_rank, "evidence": alerts.c.evidence_count}.get(sort, alerts.c.id)


def _ordered(query: Any, q: AlertQuery, after: tuple[int, int] | None) -> Any:
    """Orders by the sort key then the id (both descending, or ascending for "oldest"), after the cursor key."""
    key = _sort_column(q.sort)
    if q.sort == "oldest":
        if after is not None:
            query = query.where(alerts.c.id > after[1])
        return query.order_by(alerts.c.id.asc())
    if after is not None:
        query = query.where(alerts.c.id < after[1]) if key is alerts.c.id else query.where(
            sa.or_(key < after[0], sa.and_(key == after[0], alerts.c.id < after[1])))
    return query.order_by(alerts.c.id.desc()) if key is alerts.c.id else query.order_by(key.desc(), alerts.c.id.desc())

