"""The in-memory fake's policy area (collector/policy), mixed into ``MemoryTransaction``."""

from __future__ import annotations

from typing import Any, Sequence

from collector.policy.models import AgentPolicyState, Assignment, PolicyVersion
from collector.storage.base import AlreadyExists

__all__ = ["MemoryPolicies"]


class MemoryPolicies:
    """Policy versions keyed (name, version), assignments keyed by label, agents' reports keyed by agent id."""

    s: Any  # the transaction's copy of the state (collector/storage/memory.py _State)

    def add_policy_version(self, version: PolicyVersion) -> None:
        """Stores a new version; raises AlreadyExists if that policy has that version number already."""
        key = (version.name, version.version)
        if key in self.s.policy_versions:
            raise AlreadyExists(f"policy {version.name} version {version.version} exists")
        self.s.policy_versions[key] = version

    def get_policy_version(self, *, name: str, version: int | None = None) -> PolicyVersion | None:
        """One version of a policy, or its newest (``version`` None)."""
        if version is not None:
            found: PolicyVersion | None = self.s.policy_versions.get((name, version))
            return found
        versions = self.list_policy_versions(name)
        return versions[0] if versions else None

    def list_policy_versions(self, name: str) -> Sequence[PolicyVersion]:
        """Every version of a policy, newest first."""
        return sorted((v for (n, _), v in self.s.policy_versions.items() if n == name),
                      key=lambda v: -v.version)

    def latest_policy_versions(self) -> Sequence[PolicyVersion]:
        """The newest version of every policy, by name."""
        newest: dict[str, PolicyVersion] = {}
        for v in self.s.policy_versions.values():
            if v.name not in newest or v.version > newest[v.name].version:
                newest[v.name] = v
        return [newest[n] for n in sorted(newest)]

    def list_assignments(self) -> Sequence[Assignment]:
        """Every label's assignment, by label."""
        return [self.s.policy_assignments[label] for label in sorted(self.s.policy_assignments)]

    def put_assignment(self, assignment: Assignment) -> None:
        """Gives a label to a policy (taking it from any other)."""
        self.s.policy_assignments[assignment.label] = assignment

    def delete_assignment(self, label: str) -> bool:
        """Takes a label's assignment away; returns whether it had one."""
        return self.s.policy_assignments.pop(label, None) is not None

    def get_agent_policy_state(self, agent_id: str) -> AgentPolicyState | None:
        """What an agent last reported of its policy, or None."""
        found: AgentPolicyState | None = self.s.agent_policy.get(agent_id)
        return found

    def put_agent_policy_state(self, state: AgentPolicyState) -> None:
        """Records (replaces) what an agent reported of its policy."""
        self.s.agent_policy[state.agent_id] = state

    def list_agent_policy_states(self) -> Sequence[AgentPolicyState]:
        """What every agent that reported reported, by agent id."""
        return [self.s.agent_policy[a] for a in sorted(self.s.agent_policy)]

    def policy_targets(self) -> Sequence[tuple[str, tuple[str, ...]]]:
        """(agent id, labels) of every unrevoked agent, by agent id."""
        return [(a.agent_id, tuple(a.labels)) for _, a in sorted(self.s.agents.items()) if a.revoked_at_ns is None]
