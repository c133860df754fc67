"""SQL for policies: their versions, the label assignments and what each agent reported (collector/policy)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.storage.sql.raw import RawCursor

from collector.policy.models import AgentPolicyState, Assignment, PolicyVersion
from collector.storage.base import AlreadyExists
from collector.storage.sql.schema import agent_policy_state, policy_assignments, policy_versions

__all__ = ["PoliciesSql"]

_STATE_COLUMNS = tuple(f.name for f in fields(AgentPolicyState))


def _version(r: Any) -> PolicyVersion:
    return PolicyVersion(r.name, int(r.version), r.document, r.sha256, r.author, int(r.created_at_ns), r.comment)


class PoliciesSql:
    """The policy area."""

    _conn: Connection
    _dialect: str
    _raw: RawCursor

    def _upsert(self, table: sa.Table, key: str, row: dict[str, Any]) -> None:
        insert = (pg_dialect.insert(table) if self._dialect == "postgresql" else sqlite_dialect.insert(table))
        stmt = insert.values(**row)
        self._conn.execute(stmt.on_conflict_do_update(index_elements=[key],
                                                      set_={k: stmt.excluded[k] for k in row if k != key}))

    def add_policy_version(self, version: PolicyVersion) -> None:
        """Stores a new version; raises AlreadyExists if that policy has that version number already."""
        try:
            with self._conn.begin_nested():
                self._conn.execute(policy_versions.insert().values(**asdict(version)))
        except IntegrityError as exc:
            raise AlreadyExists(f"policy {version.name} version {version.version} exists") from exc

    def get_policy_version(self, *, name: str, version: int | None = None) -> PolicyVersion | None:
        """One version of a policy, or its newest (``version`` None); None if there is none."""
        query = sa.select(policy_versions).where(policy_versions.c.name == name)
        if version is not None:
            query = query.where(policy_versions.c.version == version)
        row = self._conn.execute(query.order_by(policy_versions.c.version.desc()).limit(1)).first()
        return None if row is None else _version(row)

    def list_policy_versions(self, name: str) -> Sequence[PolicyVersion]:
        """Every version of a policy, newest first."""
        rows = self._conn.execute(sa.select(policy_versions).where(policy_versions.c.name == name)
                                  .order_by(policy_versions.c.version.desc()))
        return [_version(r) for r in rows]

    def latest_policy_versions(self) -> Sequence[PolicyVersion]:
        """The newest version of every policy, by name."""
        newest = (sa.select(policy_versions.c.name, sa.func.max(policy_versions.c.version).label("version"))
                  .group_by(policy_versions.c.name).subquery())
        rows = self._conn.execute(
            sa.select(policy_versions).join(newest, sa.and_(policy_versions.c.name == newest.c.name,
                                                            policy_versions.c.version == newest.c.version))
            .order_by(policy_versions.c.name))
        return [_version(r) for r in rows]

    def list_assignments(self) -> Sequence[Assignment]:
        """Every label's assignment, by label."""
        rows = self._conn.execute(sa.select(policy_assignments).order_by(policy_assignments.c.label))
        return [Assignment(r.label, r.policy_name, int(r.priority), r.assigned_by, int(r.assigned_at_ns)) for r in rows]

    def put_assignment(self, assignment: Assignment) -> None:
        """Gives a label to a policy (taking it from any other)."""
        self._upsert(policy_assignments, "label", asdict(assignment))

    def delete_assignment(self, label: str) -> bool:
        """Takes a label's assignment away; returns whether it had one."""
        return bool(self._conn.execute(policy_assignments.delete().where(policy_assignments.c.label == label)).rowcount)

    def get_agent_policy_state(self, agent_id: str) -> AgentPolicyState | None:
        """What an agent last reported of its policy, or None."""
        row = self._conn.execute(sa.select(agent_policy_state).where(agent_policy_state.c.agent_id == agent_id)).first()
        return None if row is None else AgentPolicyState(**{c: getattr(row, c) for c in _STATE_COLUMNS})

    def put_agent_policy_state(self, state: AgentPolicyState) -> None:
        """Records (replaces) what an agent reported of its policy."""
        self._upsert(agent_policy_state, "agent_id", asdict(state))

    def list_agent_policy_states(self) -> Sequence[AgentPolicyState]:
        """What every agent that reported reported, by agent id."""
        # read on every delivery refresh (every few seconds, all agents): the driver's rows, not SQLAlchemy's
        rows = self._raw.all(f"SELECT {', '.join(_STATE_COLUMNS)} FROM agent_policy_state ORDER BY agent_id", ())
        return [AgentPolicyState(*r) for r in rows]

    def policy_targets(self) -> Sequence[tuple[str, tuple[str, ...]]]:
        """(agent id, labels) of every unrevoked agent, by agent id."""
        rows = self._raw.all("SELECT agent_id, labels FROM agents WHERE revoked_at_ns IS NULL ORDER BY agent_id", ())
        return [(r[0], tuple(r[1].split(",")) if r[1] else ()) for r in rows]  # labels: sorted, comma-joined (0010)
