"""Detection as its own stage over the stored stream, never inside ingest.

Each agent's position (epoch, seq) up to which detection has run is stored beside its chain head
and moves in the same transaction as the alerts it produced, so a crash neither skips events nor
raises an alert twice. On PostgreSQL one collector at a time runs the stage (a transaction-scoped
advisory lock), so several collectors on one database raise one alert per incident.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable, Sequence

from collector.alerts.service import extend_alert, raise_alert
from collector.detection.rules import ReadBurstRule, continues
from collector.events.models import StoredEvent
from collector.storage.base import Store, Transaction

__all__ = ["DetectionStage"]

log = logging.getLogger("shoumi.collector.detection")


class DetectionStage:
    """Runs the rules over events stored since each agent's detection position."""

    def __init__(self, store: Store, *, read_burst: ReadBurstRule, clock: Callable[[], int] = time.time_ns,
                 chunk: int = 5000) -> None:
        self.store = store
        self.read_burst = read_burst
        self.clock = clock
        self.chunk = chunk
        self.counters: Counter[str] = Counter()

    def run_once(self, *, max_agents: int = 200) -> int:
        """Runs detection over what was stored since the last run; returns how many events it looked at."""
        with self.store.read() as tx:
            pending = tx.agents_behind_detection(limit=max_agents)
        done = 0
        for agent_id in pending:
            with self.store.transaction() as tx:
                if not tx.claim_detection():
                    return done  # another collector runs detection now
                epoch, seq = tx.detected_upto(agent_id)
                events = tx.events_after(agent_id=agent_id, epoch=epoch, seq=seq, limit=self.chunk)
                if events:
                    self._detect(tx, events)
                    tx.mark_detected(agent_id=agent_id, epoch=events[-1].epoch, seq=events[-1].seq)
                else:  # nothing left to read (pruned by retention): catch up with the head
                    head = tx.chain_head(agent_id)
                    if head is not None:
                        tx.mark_detected(agent_id=agent_id, epoch=head.epoch, seq=head.last_seq)
            done += len(events)
        self.counters["events.detected"] += done
        return done

    def run_until_idle(self, *, limit: int = 10_000) -> int:
        """Runs until nothing is pending (tests, the end of a bench); returns the events looked at."""
        total = 0
        for _ in range(limit):
            n = self.run_once()
            total += n
            if n == 0:
                return total
        return total

    def _detect(self, tx: Transaction, stored: Sequence[StoredEvent]) -> None:
        rule = self.read_burst
        spans: dict[str, tuple[int, int]] = {}
        for e in stored:
            if e.kind == rule.kind and e.user:
                lo, hi = spans.get(e.user, (e.time_ns, e.time_ns))
                spans[e.user] = (min(lo, e.time_ns), max(hi, e.time_ns))
        for user, (lo, hi) in spans.items():
            # New reads can make reads up to one window earlier part of a burst, and deciding that
            # needs one more window before them.
            reads = tx.events_in_window(user=user, kind=rule.kind, since_ns=lo - 2 * rule.window_ns,
                                        until_ns=hi + rule.window_ns, cap=50_000)
            for finding in rule.evaluate(reads):
                if finding.last_ns < lo - rule.window_ns:
                    continue  # a burst the new reads cannot have touched: already recorded
                now = self.clock()
                existing = tx.latest_open_alert(rule=rule.name, user=user)
                if existing is not None and continues(last_event_ns=existing.last_event_ns, finding=finding,
                                                      window_ns=rule.window_ns):
                    merged = len(dict.fromkeys((*existing.event_ids, *finding.event_ids)))
                    if merged == len(existing.event_ids):
                        continue
                    extend_alert(tx=tx, alert=existing, event_ids=finding.event_ids, last_event_ns=finding.last_ns,
                                 now_ns=now, summary=finding.summary.replace(
                                     f"{len(finding.event_ids)} times", f"{merged} times", 1))
                    continue
                alert = raise_alert(tx=tx, rule=finding.rule, severity=finding.severity, user=finding.user,
                                    agent_id=finding.agent_id, event_ids=finding.event_ids, now_ns=now,
                                    last_event_ns=finding.last_ns, summary=finding.summary)
                self.counters["alerts.raised"] += 1
                log.info("alert %s raised: %s", alert.id, alert.summary)
