"""Detection rules: values in, findings out. No storage, no clock, no I/O.

A rule looks at the stored stream, never at batch boundaries: the caller gives it the events of
one user in the rule's window, however they arrived, so the same stream always yields the same
findings (tests/collector/test_detection.py checks this with hypothesis).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from collector.domain.records import Alert, StoredEvent

__all__ = ["ReadBurstRule", "Finding", "merge_finding"]


@dataclass(frozen=True)
class Finding:
    """What a rule saw: who, which events, and a sentence for the analyst."""

    rule: str
    severity: str
    user: str
    agent_id: str
    event_ids: tuple[str, ...]
    first_ns: int
    last_ns: int
    summary: str


@dataclass(frozen=True)
class ReadBurstRule:
    """More than ``threshold`` reads of sensitive files by one user within ``window_ns``."""

    threshold: int
    window_ns: int
    name: str = "read_burst"
    severity: str = "high"
    kind: str = "file.read"

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")
        if self.window_ns <= 0:
            raise ValueError("window must be positive")

    def evaluate(self, reads: Sequence[StoredEvent]) -> Finding | None:
        """Finds the densest window of one user's reads; a finding if it holds > threshold."""
        ordered = sorted((e for e in reads if e.kind == self.kind), key=lambda e: (e.time_ns, e.id))
        if not ordered:
            return None
        users = {e.user for e in ordered}
        if len(users) != 1:
            raise ValueError("a read burst is evaluated over one user's reads")
        best: tuple[int, int] | None = None
        start = 0
        for end in range(len(ordered)):
            while ordered[end].time_ns - ordered[start].time_ns > self.window_ns:
                start += 1
            if end - start + 1 > self.threshold and (
                best is None or end - start > best[1] - best[0]
            ):
                best = (start, end)
        if best is None:
            return None
        hits = ordered[best[0] : best[1] + 1]
        user = hits[0].user
        minutes = self.window_ns / 60e9
        files = len({e.path for e in hits})
        return Finding(
            rule=self.name,
            severity=self.severity,
            user=user,
            agent_id=hits[-1].agent_id,
            event_ids=tuple(e.id for e in hits),
            first_ns=hits[0].time_ns,
            last_ns=hits[-1].time_ns,
            summary=(
                f"{user} read sensitive files {len(hits)} times ({files} distinct files) "
                f"within {minutes:g} min; threshold {self.threshold}"
            ),
        )


def merge_finding(existing: Alert | None, finding: Finding, *, window_ns: int, now_ns: int) -> Alert:
    """Returns the alert to store: the open alert extended if the finding continues it, else a new one.

    A finding continues an open alert when it starts within one window of the alert's last
    event, so one sustained burst stays one alert while a burst next week is a new one.
    """
    if existing is not None and finding.first_ns - existing.last_event_ns <= window_ns:
        merged = tuple(dict.fromkeys(existing.event_ids + finding.event_ids))
        if merged == existing.event_ids:
            return existing
        return replace(
            existing,
            event_ids=merged,
            updated_at_ns=now_ns,
            last_event_ns=max(existing.last_event_ns, finding.last_ns),
            summary=finding.summary if len(finding.event_ids) >= len(existing.event_ids) else existing.summary,
        )
    return Alert(
        rule=finding.rule,
        severity=finding.severity,
        status="open",
        user=finding.user,
        agent_id=finding.agent_id,
        created_at_ns=now_ns,
        updated_at_ns=now_ns,
        event_ids=finding.event_ids,
        summary=finding.summary,
        last_event_ns=finding.last_ns,
    )
