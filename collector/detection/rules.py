"""The read-burst rule as first released, evaluated over a whole window: the reference the incremental
engine (collector/detection/engine.py) is property-tested against. No storage, no clock, no I/O.

A rule looks at the stored stream, never at batch boundaries: the caller gives it the events of
one user in the rule's window, however they arrived, so the same stream always yields the same
findings (tests/collector/test_detection.py checks this with hypothesis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from collector.events.models import StoredEvent

__all__ = ["ReadBurstRule", "Finding"]


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

    def evaluate(self, reads: Sequence[StoredEvent]) -> list[Finding]:
        """Finds the bursts in one user's reads, oldest first.

        A read belongs to a burst when some window of ``window_ns`` holding it holds more than
        ``threshold`` reads; burst reads less than a window apart form one finding. Membership only
        grows as reads are added, which is what makes the result independent of batching.
        """
        ordered = sorted((e for e in reads if e.kind == self.kind), key=lambda e: (e.time_ns, e.id))
        if not ordered:
            return []
        if len({e.user for e in ordered}) != 1:
            raise ValueError("a read burst is evaluated over one user's reads")
        member = [False] * len(ordered)
        start = 0
        marked_upto = -1
        for end in range(len(ordered)):
            while ordered[end].time_ns - ordered[start].time_ns > self.window_ns:
                start += 1
            if end - start + 1 > self.threshold:
                for i in range(max(start, marked_upto + 1), end + 1):
                    member[i] = True
                marked_upto = end
        hits = [e for e, m in zip(ordered, member) if m]
        clusters: list[list[StoredEvent]] = []
        for e in hits:
            if clusters and e.time_ns - clusters[-1][-1].time_ns <= self.window_ns:
                clusters[-1].append(e)
            else:
                clusters.append([e])
        return [self._finding(c) for c in clusters]

    def _finding(self, hits: list[StoredEvent]) -> Finding:
        user = hits[0].user
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
                f"in bursts of more than {self.threshold} within {self.window_ns / 60e9:g} min"
            ),
        )

