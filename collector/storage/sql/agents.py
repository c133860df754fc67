"""SQL for enrollment tokens, agents (their labels and health rows, the fleet page's query) and their certificates."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.domain.records import Page
from collector.enrollment.models import EnrollToken, token_state
from collector.fleet.models import STATUSES, AgentHealth, AgentQuery, AgentRecord, FleetRow
from collector.storage.base import AlreadyExists
from collector.events.models import StoredEvent
from collector.storage.sql.batches import event_from_row
from collector.storage.sql.raw import RawCursor
from collector.storage.sql.schema import agent_health, agent_labels, agents, alerts, certificates, enroll_tokens, events

__all__ = ["AgentsSql"]

_AGENT_COLUMNS = ("agent_id, public_key, hostname, os, agent_version, enrolled_at_ns, revoked_at_ns, last_seen_ns, "
                  "heartbeat_interval_s, liveness, labels")

# the fleet status as SQL, the same as fleet.models.status_of
_STATUS = sa.case(
    (agents.c.revoked_at_ns.is_not(None), "revoked"),
    (agents.c.liveness == "active", "online"),
    (agents.c.liveness == "silent", "silent"),
    (agents.c.liveness == "stopped", "stopped"),
    else_="offline",
)
_SORT_KEYS: dict[str, Any] = {
    "hostname": agents.c.hostname,
    "last_seen": sa.func.coalesce(agents.c.last_seen_ns, 0),
    "version": agents.c.agent_version,
    "status": _STATUS,
    "enrolled": agents.c.enrolled_at_ns,
}
_HEALTH_COLUMNS = tuple(c for c in agent_health.c if c.name != "agent_id")


def _join(labels: Sequence[str]) -> str:
    return ",".join(labels)


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def _like(text: str) -> str:
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class AgentsSql:
    """Enrollment, agent and certificate areas."""

    _conn: Connection
    _raw: RawCursor
    _dialect: str

    def add_enroll_token(self, *, token_hash: str, created_at_ns: int, expires_at_ns: int, created_by: str,
                         max_uses: int = 1, labels: Sequence[str] = (), name: str = "") -> None:
        """Records a new enrollment token (only its hash)."""
        try:
            with self._conn.begin_nested():
                self._conn.execute(enroll_tokens.insert().values(
                    token_hash=token_hash, created_by=created_by, created_at_ns=created_at_ns,
                    expires_at_ns=expires_at_ns, max_uses=max_uses, uses=0, labels=_join(labels), name=name))
        except IntegrityError as exc:
            raise AlreadyExists("token exists") from exc

    def consume_enroll_token(self, *, token_hash: str, agent: AgentRecord, now_ns: int) -> str | None:
        """Spends one use of a token and records the agent with its labels; returns why not, or None."""
        t = enroll_tokens.c
        spent = self._conn.execute(
            enroll_tokens.update()
            .where(t.token_hash == token_hash, t.revoked_at_ns.is_(None), t.uses < t.max_uses, t.expires_at_ns > now_ns)
            .values(uses=t.uses + 1, used_at_ns=now_ns, used_by_agent=agent.agent_id)
            .returning(t.labels)
        ).first()
        if spent is None:
            row = self._conn.execute(sa.select(enroll_tokens).where(t.token_hash == token_hash)).first()
            return "unknown" if row is None else token_state(_token_from(row), now_ns=now_ns)
        labels = _split(spent.labels)
        record = replace(agent, labels=labels)
        try:
            with self._conn.begin_nested():
                self._conn.execute(agents.insert().values(**_agent_row(record)))
                if labels:
                    self._conn.execute(agent_labels.insert(),
                                       [{"agent_id": agent.agent_id, "label": label} for label in labels])
        except IntegrityError as exc:
            raise AlreadyExists(f"agent {agent.agent_id} exists") from exc
        return None

    def revoke_enroll_token(self, *, token_hash: str, now_ns: int) -> bool:
        """Revokes a token with uses left; returns whether one was revoked."""
        t = enroll_tokens.c
        res = self._conn.execute(
            enroll_tokens.update()
            .where(t.token_hash == token_hash, t.uses < t.max_uses, t.revoked_at_ns.is_(None))
            .values(revoked_at_ns=now_ns)
        )
        return bool(res.rowcount)

    def get_enroll_token(self, token_hash: str) -> EnrollToken | None:
        """One token's record."""
        row = self._conn.execute(sa.select(enroll_tokens).where(enroll_tokens.c.token_hash == token_hash)).first()
        return None if row is None else _token_from(row)

    def list_enroll_tokens(self, *, limit: int = 500) -> Sequence[EnrollToken]:
        """Tokens, newest first."""
        rows = self._conn.execute(sa.select(enroll_tokens).order_by(
            enroll_tokens.c.created_at_ns.desc(), enroll_tokens.c.token_hash).limit(limit)).all()
        return [_token_from(r) for r in rows]

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        """Gets an agent by its id."""
        row = self._raw.one(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE agent_id = ?", (agent_id,))
        if row is None:
            return None
        return AgentRecord(row[0], bytes(row[1]), row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
                           _split(row[10]))

    def list_agents(self) -> Sequence[AgentRecord]:
        """Lists all enrolled agents."""
        rows = self._conn.execute(sa.select(agents).order_by(agents.c.enrolled_at_ns, agents.c.agent_id)).all()
        return [_agent_from(r) for r in rows]

    def update_agent_liveness(self, *, agent_id: str, liveness: str, last_seen_ns: int | None = None,
                              heartbeat_interval_s: float | None = None, only_from: str | None = None) -> bool:
        """Records when an agent was last heard from, its heartbeat interval and its liveness."""
        if only_from is None and last_seen_ns is not None:  # what every stored batch does
            if heartbeat_interval_s is None:
                return bool(self._raw.run("UPDATE agents SET liveness = ?, last_seen_ns = ? WHERE agent_id = ?",
                                          (liveness, last_seen_ns, agent_id)))
            return bool(self._raw.run(
                "UPDATE agents SET liveness = ?, last_seen_ns = ?, heartbeat_interval_s = ? WHERE agent_id = ?",
                (liveness, last_seen_ns, heartbeat_interval_s, agent_id)))
        values: dict[str, Any] = {"liveness": liveness}
        if last_seen_ns is not None:
            values["last_seen_ns"] = last_seen_ns
        if heartbeat_interval_s is not None:
            values["heartbeat_interval_s"] = heartbeat_interval_s
        query = agents.update().where(agents.c.agent_id == agent_id)
        if only_from is not None:  # a compare-and-set: of two collectors deciding the same move, one wins
            query = query.where(agents.c.liveness == only_from)
        return bool(self._conn.execute(query.values(**values)).rowcount)

    def revoke_agent(self, *, agent_id: str, now_ns: int) -> bool:
        """Marks an agent revoked; returns whether it existed and was not revoked yet."""
        res = self._conn.execute(agents.update().where(agents.c.agent_id == agent_id, agents.c.revoked_at_ns.is_(None))
                                 .values(revoked_at_ns=now_ns))
        return bool(res.rowcount)

    # --- fleet: labels, health rows, the fleet page's query ---
    def set_agent_labels(self, *, agent_id: str, labels: Sequence[str]) -> bool:
        """Replaces an agent's labels."""
        labels = tuple(labels)
        if not self._conn.execute(agents.update().where(agents.c.agent_id == agent_id)
                                  .values(labels=_join(labels))).rowcount:
            return False
        self._conn.execute(agent_labels.delete().where(agent_labels.c.agent_id == agent_id))
        if labels:
            self._conn.execute(agent_labels.insert(), [{"agent_id": agent_id, "label": label} for label in labels])
        return True

    def agent_ids_with_label(self, label: str) -> Sequence[str]:
        """The ids of every agent carrying the label, sorted."""
        return [r[0] for r in self._conn.execute(
            sa.select(agent_labels.c.agent_id).where(agent_labels.c.label == label).order_by(agent_labels.c.agent_id))]

    def get_agent_health(self, agent_id: str) -> AgentHealth | None:
        """An agent's health row (ingest reads it on every heartbeat: on the driver's cursor)."""
        row = self._raw.one(_GET_HEALTH, (agent_id,))
        if row is None:
            return None
        return AgentHealth(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
                           tuple(json.loads(row[10])))

    def put_agent_health(self, health: AgentHealth) -> None:
        """Inserts or replaces an agent's health row (one statement, on the driver's cursor: built through
        SQLAlchemy each time, this upsert was two thirds of a heartbeat's transaction)."""
        values = _health_row(health)
        self._raw.run(_PUT_HEALTH, tuple(values[c] for c in _HEALTH_COLUMN_NAMES))

    def query_agents(self, q: AgentQuery, *, after: tuple[Any, str] | None, limit: int) -> Page:
        """The fleet page: filtered, sorted by an indexed key and the agent id, one page of rows."""
        key = _SORT_KEYS[q.sort]
        newest_cert = (sa.select(sa.func.max(certificates.c.not_after_ns))
                       .where(certificates.c.agent_id == agents.c.agent_id, certificates.c.revoked_at_ns.is_(None))
                       .scalar_subquery())
        query = (sa.select(agents, *_HEALTH_COLUMNS, key.label("sort_key"), newest_cert.label("cert_not_after"))
                 .select_from(agents.outerjoin(agent_health, agent_health.c.agent_id == agents.c.agent_id)))
        query = query.where(*_agent_filters(q))
        if after is not None:
            value, last_id = after
            if q.descending:
                query = query.where(sa.or_(key < value, sa.and_(key == value, agents.c.agent_id < last_id)))
            else:
                query = query.where(sa.or_(key > value, sa.and_(key == value, agents.c.agent_id > last_id)))
        order = (key.desc(), agents.c.agent_id.desc()) if q.descending else (key.asc(), agents.c.agent_id.asc())
        rows = self._conn.execute(query.order_by(*order).limit(limit + 1)).all()
        items = tuple(FleetRow(_agent_from(r), _health_from(r, r.agent_id) if r.updated_at_ns is not None else None,
                               r.cert_not_after) for r in rows[:limit])
        nxt = json.dumps([rows[limit - 1].sort_key, rows[limit - 1].agent_id]) if len(rows) > limit else None
        return Page(items, nxt)

    def count_agents_by_status(self) -> dict[str, int]:
        """Agents by fleet status."""
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self._conn.execute(sa.select(_STATUS, sa.func.count()).group_by(_STATUS)):
            counts[status] = int(n)
        return counts

    def agent_versions(self) -> Sequence[str]:
        """The distinct agent versions, sorted."""
        return [r[0] for r in self._conn.execute(
            sa.select(agents.c.agent_version).distinct().order_by(agents.c.agent_version))]

    def open_agent_alerts(self, *, agent_ids: Sequence[str], rules: Sequence[str]) -> dict[str, tuple[tuple[str, int], ...]]:
        """Each agent's open alerts of these rules as (rule, id), newest first (agents without any absent)."""
        if not agent_ids:
            return {}
        rows = self._conn.execute(
            sa.select(alerts.c.agent_id, alerts.c.rule, alerts.c.id)
            .where(alerts.c.agent_id.in_(list(agent_ids)), alerts.c.rule.in_(list(rules)), alerts.c.status == "open")
            .order_by(alerts.c.agent_id, alerts.c.id.desc())).all()
        out: dict[str, list[tuple[str, int]]] = {}
        for agent_id, rule, alert_id in rows:
            out.setdefault(agent_id, []).append((rule, int(alert_id)))
        return {k: tuple(v) for k, v in out.items()}

    def recent_agent_events(self, *, agent_id: str, kinds: Sequence[str], scan: int, limit: int) -> Sequence[StoredEvent]:
        """Of the agent's newest ``scan`` events (backwards on its chain index), those of these kinds, newest first."""
        newest = (sa.select(events).where(events.c.agent_id == agent_id)
                  .order_by(events.c.epoch.desc(), events.c.seq.desc()).limit(scan).subquery())
        query = (sa.select(newest).where(newest.c.kind.in_(list(kinds)))
                 .order_by(newest.c.epoch.desc(), newest.c.seq.desc()).limit(limit))
        return [event_from_row(r) for r in self._conn.execute(query).all()]

    def add_certificate(self, *, serial: int, agent_id: str, not_before_ns: int, not_after_ns: int) -> None:
        """Records a client certificate issued to an agent."""
        self._conn.execute(certificates.insert().values(
            serial=str(serial), agent_id=agent_id, not_before_ns=not_before_ns, not_after_ns=not_after_ns))

    def certificate_status(self, *, serial: int) -> tuple[str, bool] | None:
        """Returns (agent id, revoked) of an issued certificate, or None if the collector never issued it."""
        row = self._raw.one("SELECT agent_id, revoked_at_ns FROM certificates WHERE serial = ?", (str(serial),))
        return None if row is None else (row[0], row[1] is not None)

    def revoke_certificate(self, *, serial: int, now_ns: int) -> bool:
        """Revokes one certificate; returns whether it was issued and not revoked yet."""
        res = self._conn.execute(
            certificates.update().where(certificates.c.serial == str(serial), certificates.c.revoked_at_ns.is_(None))
            .values(revoked_at_ns=now_ns))
        return bool(res.rowcount)

    def certificates_expiring(self, *, before_ns: int, now_ns: int, limit: int) -> Sequence[tuple[str, int]]:
        """Unrevoked agents whose newest unrevoked certificate ends in (now, before) with less than a quarter of its
        lifetime left, soonest first: a range on the certificates' end index, so the periodic check reads only
        those about to expire."""
        c, later = certificates.c, certificates.alias("later")
        newer = sa.exists().where(later.c.agent_id == c.agent_id, later.c.revoked_at_ns.is_(None),
                                  later.c.not_after_ns > c.not_after_ns)
        query = (sa.select(c.agent_id, c.not_after_ns)
                 .select_from(certificates.join(agents, agents.c.agent_id == c.agent_id))
                 .where(c.not_after_ns > now_ns, c.not_after_ns < before_ns, c.revoked_at_ns.is_(None),
                        (c.not_after_ns - now_ns) * 4 < c.not_after_ns - c.not_before_ns,
                        agents.c.revoked_at_ns.is_(None), ~newer)
                 .order_by(c.not_after_ns, c.agent_id).limit(limit))
        found: dict[str, int] = {}
        for agent_id, not_after in self._conn.execute(query):
            found.setdefault(agent_id, int(not_after))
        return list(found.items())

def _agent_filters(q: AgentQuery) -> list[Any]:
    where: list[Any] = []
    if q.status is not None:
        where.append(_STATUS == q.status)
    if q.label:
        where.append(agents.c.agent_id.in_(sa.select(agent_labels.c.agent_id).where(agent_labels.c.label == q.label)))
    if q.version:
        where.append(agents.c.agent_version == q.version)
    if q.os:
        where.append(sa.func.lower(agents.c.os).like(_like(q.os), escape="\\"))
    if q.text:
        pattern = _like(q.text)
        where.append(sa.or_(sa.func.lower(agents.c.hostname).like(pattern, escape="\\"),
                            sa.func.lower(agents.c.agent_id).like(pattern, escape="\\")))
    return where


def _agent_row(a: AgentRecord) -> dict[str, Any]:
    return dict(agent_id=a.agent_id, public_key=a.public_key, hostname=a.hostname, os=a.os,
                agent_version=a.agent_version, enrolled_at_ns=a.enrolled_at_ns, revoked_at_ns=a.revoked_at_ns,
                last_seen_ns=a.last_seen_ns, heartbeat_interval_s=a.heartbeat_interval_s, liveness=a.liveness,
                labels=_join(a.labels))


def _agent_from(r: Any) -> AgentRecord:
    return AgentRecord(r.agent_id, bytes(r.public_key), r.hostname, r.os, r.agent_version, r.enrolled_at_ns,
                       r.revoked_at_ns, r.last_seen_ns, r.heartbeat_interval_s, r.liveness, _split(r.labels))


def _token_from(r: Any) -> EnrollToken:
    return EnrollToken(r.token_hash, r.created_by, r.created_at_ns, r.expires_at_ns, r.max_uses, r.uses,
                       _split(r.labels), r.name, r.used_at_ns, r.revoked_at_ns)


# the health row's columns in the table's order, which is AgentHealth's (users last, as JSON text)
_HEALTH_COLUMN_NAMES = tuple(c.name for c in agent_health.columns)
_GET_HEALTH = f"SELECT {', '.join(_HEALTH_COLUMN_NAMES)} FROM agent_health WHERE agent_id = ?"
_PUT_HEALTH = (f"INSERT INTO agent_health ({', '.join(_HEALTH_COLUMN_NAMES)}) "
               f"VALUES ({', '.join('?' * len(_HEALTH_COLUMN_NAMES))}) ON CONFLICT (agent_id) DO UPDATE SET "
               + ", ".join(f"{c} = excluded.{c}" for c in _HEALTH_COLUMN_NAMES if c != "agent_id"))
assert _HEALTH_COLUMN_NAMES == tuple(AgentHealth.__dataclass_fields__) and _HEALTH_COLUMN_NAMES[-1] == "users"


def _health_row(h: AgentHealth) -> dict[str, Any]:
    return dict(agent_id=h.agent_id, updated_at_ns=h.updated_at_ns, heartbeat_ns=h.heartbeat_ns,
                reported_version=h.reported_version, spool_unacked_events=h.spool_unacked_events,
                spool_bytes=h.spool_bytes, spool_refused_pending=h.spool_refused_pending,
                refused_total=h.refused_total, capture_gaps=h.capture_gaps, clock_skew_ms=h.clock_skew_ms,
                users=json.dumps(list(h.users)))


def _health_from(r: Any, agent_id: str | None = None) -> AgentHealth:
    return AgentHealth(agent_id or r.agent_id, r.updated_at_ns, r.heartbeat_ns, r.reported_version, r.spool_unacked_events,
                       r.spool_bytes, r.spool_refused_pending, r.refused_total, r.capture_gaps, r.clock_skew_ms,
                       tuple(json.loads(r.users)))
