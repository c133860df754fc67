"""The audit log's values: one entry per human action, written in the action's own transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["AuditEntry"]


@dataclass(frozen=True)
class AuditEntry:
    """One human action, kept for the audit log."""

    at_ns: int
    actor: str
    action: str
    target: str
    details: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None
