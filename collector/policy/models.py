"""Policies as versioned documents: the values, and how an agent's labels pick its policy. Pure.

A policy is a name (``finance-laptops``) and its versions; each edit is a new immutable version
holding the whole document (the agent's ``[policy]`` table as TOML), its SHA-256, who wrote it,
when, and why. Agents are given policies by label: an ``Assignment`` ties one label to one
policy, with a priority. Theory of operation for ``resolve``:

* every label an agent carries that has an assignment is a candidate;
* the candidate with the highest ``priority`` wins; equal priorities go to the policy name that
  sorts first, then the label that sorts first, so the answer never depends on storage order;
* the label ``*`` (``DEFAULT_LABEL``) matches every agent, and only when no other label does;
* no candidate: nothing is assigned and the agent keeps what it has (its local agent.toml, or the
  last policy it applied).

The agent is always sent the newest version of the assigned policy. ``AgentPolicyState`` is what
the collector last heard from an agent: the version it applied, and its latest refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from collector.fleet.models import check_labels

__all__ = ["PolicyVersion", "Assignment", "AgentPolicyState", "resolve", "DEFAULT_LABEL", "NAME_PATTERN",
           "check_name", "check_label", "MAX_COMMENT", "MAX_PRIORITY", "by_label_of"]

DEFAULT_LABEL = "*"
NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
MAX_COMMENT = 500
MAX_PRIORITY = 1_000_000
_NAME = re.compile(NAME_PATTERN)


def check_name(name: str) -> str:
    """Returns the policy name if it is one (lower case a-z 0-9 . _ -, at most 64), else raises ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"policy name {str(name)[:70]!r}: 1-64 characters of a-z 0-9 . _ - "
                         "(lower case, starting with a letter or digit)")
    return name


def check_label(label: str) -> str:
    """Returns the label if it is one an agent can carry (the fleet's syntax) or ``*``, else raises ValueError."""
    text = label.strip() if isinstance(label, str) else label
    if text == DEFAULT_LABEL:
        return text
    (checked,) = check_labels([text])  # one syntax for labels: the fleet's
    return checked


@dataclass(frozen=True)
class PolicyVersion:
    """One immutable version of a named policy."""

    name: str
    version: int
    document: str          # the [policy] table as TOML: exactly the bytes (UTF-8) that are signed and pushed
    sha256: str            # lowercase hex of the UTF-8 document, the hash agents report back
    author: str
    created_at_ns: int
    comment: str = ""


@dataclass(frozen=True)
class Assignment:
    """One label given one policy; a label belongs to at most one policy."""

    label: str
    policy_name: str
    priority: int
    assigned_by: str
    assigned_at_ns: int


@dataclass(frozen=True)
class AgentPolicyState:
    """What an agent last reported: the policy in force on it, and its latest refusal."""

    agent_id: str
    updated_at_ns: int
    applied_name: str | None = None
    applied_version: int | None = None
    applied_sha256: str | None = None
    applied_source: str | None = None   # "collector" (pushed) or "local" (its agent.toml), as the agent says
    applied_at_ns: int | None = None
    refused_name: str | None = None
    refused_version: int | None = None
    refused_sha256: str | None = None
    refused_reason: str | None = None
    refused_at_ns: int | None = None


def resolve(labels: Iterable[str], assignments: Sequence[Assignment] | Mapping[str, Assignment]) -> Assignment | None:
    """The assignment that decides an agent's policy (see the module docstring), or None; ``assignments``
    may be given by label already (``by_label``), when many agents are resolved at once."""
    by_label = assignments if isinstance(assignments, Mapping) else by_label_of(assignments)
    found = [by_label[label] for label in set(labels) if label in by_label and label != DEFAULT_LABEL]
    if found:
        return min(found, key=lambda a: (-a.priority, a.policy_name, a.label))
    return by_label.get(DEFAULT_LABEL)


def by_label_of(assignments: Sequence[Assignment]) -> dict[str, Assignment]:
    """Assignments by their label."""
    return {a.label: a for a in assignments}
