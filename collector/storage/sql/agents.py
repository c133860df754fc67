"""SQL for enrollment tokens, agents and their certificates."""

from __future__ import annotations

from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.fleet.models import AgentRecord
from collector.storage.base import AlreadyExists
from collector.storage.sql.raw import RawCursor
from collector.storage.sql.schema import agents, certificates, enroll_tokens

__all__ = ["AgentsSql"]

class AgentsSql:
    """Enrollment, agent and certificate areas."""

    _conn: Connection
    _raw: RawCursor

    def add_enroll_token(self, *, token_hash: str, created_at_ns: int, expires_at_ns: int, created_by: str) -> None:
        """Records a new enrollment token (only its hash)."""
        self._conn.execute(enroll_tokens.insert().values(
            token_hash=token_hash, created_by=created_by, created_at_ns=created_at_ns, expires_at_ns=expires_at_ns))

    def consume_enroll_token(self, *, token_hash: str, agent: AgentRecord, now_ns: int) -> str | None:
        """Uses a token and records the agent; returns why not, or None."""
        row = self._conn.execute(
            sa.select(enroll_tokens).where(enroll_tokens.c.token_hash == token_hash).with_for_update()
        ).first()
        if row is None:
            return "unknown"
        if row.revoked_at_ns is not None:
            return "revoked"
        if row.used_at_ns is not None:
            return "used"
        if row.expires_at_ns <= now_ns:
            return "expired"
        self._conn.execute(enroll_tokens.update().where(enroll_tokens.c.token_hash == token_hash)
                           .values(used_at_ns=now_ns, used_by_agent=agent.agent_id))
        try:
            with self._conn.begin_nested():
                self._conn.execute(agents.insert().values(**_agent_row(agent)))
        except IntegrityError as exc:
            raise AlreadyExists(f"agent {agent.agent_id} exists") from exc
        return None

    def revoke_enroll_token(self, *, token_hash: str, now_ns: int) -> bool:
        """Revokes an unused token; returns whether one was revoked."""
        res = self._conn.execute(
            enroll_tokens.update()
            .where(enroll_tokens.c.token_hash == token_hash, enroll_tokens.c.used_at_ns.is_(None),
                   enroll_tokens.c.revoked_at_ns.is_(None))
            .values(revoked_at_ns=now_ns)
        )
        return bool(res.rowcount)

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        """Gets an agent by its id."""
        row = self._raw.one(
            "SELECT agent_id, public_key, hostname, os, agent_version, enrolled_at_ns, revoked_at_ns, last_seen_ns, "
            "heartbeat_interval_s, liveness FROM agents WHERE agent_id = ?", (agent_id,))
        return None if row is None else AgentRecord(row[0], bytes(row[1]), *row[2:])

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


def _agent_row(a: AgentRecord) -> dict[str, Any]:
    return dict(agent_id=a.agent_id, public_key=a.public_key, hostname=a.hostname, os=a.os,
                agent_version=a.agent_version, enrolled_at_ns=a.enrolled_at_ns, revoked_at_ns=a.revoked_at_ns,
                last_seen_ns=a.last_seen_ns, heartbeat_interval_s=a.heartbeat_interval_s, liveness=a.liveness)


def _agent_from(r: Any) -> AgentRecord:
    return AgentRecord(r.agent_id, bytes(r.public_key), r.hostname, r.os, r.agent_version, r.enrolled_at_ns,
                       r.revoked_at_ns, r.last_seen_ns, r.heartbeat_interval_s, r.liveness)
