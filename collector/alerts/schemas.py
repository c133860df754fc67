"""The shapes the alert API answers with (its response models, so /openapi.json describes them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["AlertOut", "AlertPage", "CountsOut", "GroupOut", "GroupPage", "SavedFilterOut", "SavedFilterPage",
           "BulkOut", "EvidenceOut", "EvidencePage", "HealthOut", "DetailOut", "SuppressionOut", "SuppressionPage",
           "ChangedOut"]


class AlertOut(BaseModel):
    """An alert; ``user`` is the person's pseudonym, also in the summary."""

    id: int
    rule: str
    severity: str
    status: str
    user: str = Field(description="a pseudonym, e.g. P-7K3M9QX2PA; empty when the alert names no person")
    agent_id: str
    created_at: str
    updated_at: str
    last_event_at: str
    evidence_count: int
    summary: str
    occurrences: int
    outcome: str | None
    assignee: str | None


class AlertPage(BaseModel):
    """A page of alerts and the cursor to the next (None at the end)."""

    items: list[AlertOut]
    next_cursor: str | None


class CountsOut(BaseModel):
    """How many alerts a filter matches, by status, rule and severity."""

    total: int
    by_status: dict[str, int]
    by_rule: dict[str, int]
    by_severity: dict[str, int]


class GroupOut(BaseModel):
    """One person's alerts under a filter."""

    user: str
    total: int
    open: int
    acknowledged: int
    closed: int
    severe: int
    last_created_at: str
    url: str


class GroupPage(BaseModel):
    """A page of people."""

    items: list[GroupOut]
    next_cursor: str | None


class SavedFilterOut(BaseModel):
    """A saved filter and its queue link."""

    id: int
    name: str
    query: str
    created_at: str
    url: str


class SavedFilterPage(BaseModel):
    """The caller's saved filters."""

    items: list[SavedFilterOut]
    next_cursor: str | None


class BulkOut(BaseModel):
    """What a bulk request changed (or, for a dry run, would change)."""

    dry_run: bool
    action: str
    matched: int
    changed: int
    skipped: list[dict[str, Any]]
    bulk: str | None = None
    skipped_count: int = 0
    suppressions: list[int] = []


class EvidenceOut(BaseModel):
    """One evidence event: when, what, who (pseudonym), which file and process, where the content went."""

    id: str
    time: str
    kind: str
    user: str
    path: str
    size: int
    sha256: str
    process: dict[str, Any]
    flow: dict[str, Any] | None = None
    dest_path: str | None = None


class EvidencePage(BaseModel):
    """A page of evidence in time order."""

    items: list[EvidenceOut]
    next_cursor: str | None


class HealthOut(BaseModel):
    """The agent around an alert's evidence."""

    agent_id: str
    hostname: str | None
    liveness: str | None
    last_seen: str | None
    heartbeat_interval_s: float
    window: dict[str, str]
    heartbeats: int
    complete: bool
    silences: list[dict[str, Any]]
    capture_gaps: list[dict[str, Any]]
    spool_refusals: list[dict[str, Any]]
    starts_stops: list[dict[str, Any]]
    delivery_alerts: list[dict[str, Any]]


class DetailOut(AlertOut):
    """An alert with its first page of evidence, the agent's health then and the cases holding it."""

    first_event_at: str
    evidence: dict[str, Any]
    agent: HealthOut
    cases: list[int]


class SuppressionOut(BaseModel):
    """A suppression; ``user`` is a pseudonym."""

    id: int
    rule: str
    user: str | None
    path: str | None
    owner: str
    reason: str
    created_at: str
    expires_at: str
    lifted_at: str | None
    suppressed_events: int
    last_suppressed_at: str | None


class SuppressionPage(BaseModel):
    """Suppressions, newest first."""

    items: list[SuppressionOut]
    next_cursor: str | None


class ChangedOut(AlertOut):
    """An alert after a change, with the suppression made in the same step, if any."""

    suppression: SuppressionOut | None = None
