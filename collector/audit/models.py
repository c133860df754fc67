"""The audit log's values: one entry per human action, written in the action's own transaction, hash-chained.

Every row names the hash of the row before it (``prev_hash``; the first names ``GENESIS``) and its
own ``row_hash`` = SHA-256 over (prev_hash, at_ns, actor, action, target, the canonical JSON of
details). Changing, removing or inserting a row breaks the chain from there on; ``verify`` names
the first broken row. Where a change has a before and an after, both go inside ``details``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["AuditEntry", "AuditFilter", "AuditHead", "AuditRow", "GENESIS", "canonical_details", "audit_row_hash"]

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """One human action, kept for the audit log."""

    at_ns: int
    actor: str
    action: str
    target: str
    details: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None
    prev_hash: str | None = None
    row_hash: str | None = None


@dataclass(frozen=True)
class AuditRow:
    """An audit row exactly as stored (details as its stored text), for verify and export."""

    id: int
    at_ns: Any
    actor: Any
    action: Any
    target: Any
    details: Any
    prev_hash: Any
    row_hash: Any


@dataclass(frozen=True)
class AuditHead:
    """The end of the chain as the store records it: last row id, its hash, and how many rows."""

    last_id: int
    last_hash: str
    count: int


@dataclass(frozen=True)
class AuditFilter:
    """What an auditor narrows the log to; every field optional."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None


def canonical_details(details: Mapping[str, Any]) -> str:
    """The one JSON text of details that is hashed and stored: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(dict(details), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def audit_row_hash(prev_hash: str, at_ns: int, actor: str, action: str, target: str, details_json: str) -> str:
    """The hash of one row, chained to the row before it."""
    payload = json.dumps([prev_hash, at_ns, actor, action, target, details_json], ensure_ascii=False,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
