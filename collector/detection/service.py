"""Detection as its own stage over the stored stream, never inside ingest.

Each agent's position (epoch, seq) up to which detection has run is stored beside its chain head.
A run reads one agent's next events and the states of the rules they touch (a read transaction),
lets the engine look at each event once (collector/detection/engine.py, pure), and then, in one
write transaction, checks that the position has not moved, stores the new states, raises or extends
the alerts and moves the position: a crash neither skips events nor raises an alert twice. On
PostgreSQL one collector at a time writes (a transaction-scoped advisory lock), so several
collectors on one database raise one alert per incident. Suppressed findings are counted on their
suppression, never dropped silently.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

from collector.alerts.service import raise_alert
from collector.detection.engine import Engine, Finding, build_rules
from collector.detection.models import RuleSet
from collector.ingest.gate import WriteGate
from collector.storage.base import Store, Transaction

__all__ = ["DetectionStage"]

log = logging.getLogger("shoumi.collector.detection")


class DetectionStage:
    """Runs the rules over events stored since each agent's detection position."""

    def __init__(self, store: Store, *, rules: RuleSet | None = None, clock: Callable[[], int] = time.time_ns,
                 chunk: int = 5000, write_gate: WriteGate | None = None) -> None:
        self.store = store
        self.write_gate = write_gate or WriteGate(None)  # SQLite: taken in turn with the ingest committer
        self.clock = clock
        self.chunk = chunk
        self.counters: Counter[str] = Counter()
        self.use(rules or RuleSet())

    def use(self, rules: RuleSet) -> None:
        """Runs these rules from the next event on (a reload of the rules file)."""
        self.rules = rules
        self.engine = Engine(build_rules(rules))

    def run_once(self, *, max_agents: int = 200) -> int:
        """Runs detection over what was stored since the last run; returns how many events it looked at."""
        with self.store.read() as tx:
            pending = tx.agents_behind_detection(limit=max_agents)
        done = 0
        for agent_id in pending:
            looked = self._run_agent(agent_id)
            if looked is None:
                break  # another collector runs detection now
            done += looked
        self.counters["events.detected"] += done
        return done

    def run_until_idle(self, *, limit: int = 10_000) -> int:
        """Runs until nothing is pending (tests, the end of a bench, a stop); returns the events looked at."""
        total = 0
        for _ in range(limit):
            n = self.run_once()
            total += n
            if n == 0:
                return total
        return total

    def _run_agent(self, agent_id: str) -> int | None:
        with self.store.read() as tx:
            position = tx.detected_upto(agent_id)
            events = tx.events_after(agent_id=agent_id, epoch=position[0], seq=position[1], limit=self.chunk)
            keys = sorted(self.engine.keys(events))
            states = tx.load_rule_states(keys)
            head = tx.chain_head(agent_id)
        findings = self.engine.run(states, events)  # pure: no lock is held while the rules run
        with self.write_gate.held(), self.store.transaction() as tx:
            if not tx.claim_detection():
                return None
            if tx.detected_upto(agent_id) != position:
                return 0  # someone else ran this agent meanwhile: look again next time
            if not events:  # nothing left to read (pruned by retention): catch up with the head
                if head is not None:
                    tx.mark_detected(agent_id=agent_id, epoch=head.epoch, seq=head.last_seq)
                return 0
            tx.save_rule_states({k: states[k] for k in keys if k in states})
            now = self.clock()
            active = tx.list_suppressions(active_at_ns=now) if findings else []
            for finding in findings:
                covering = next((x for x in active if x.covers(rule=finding.rule, user=finding.user, path=finding.path,
                                                                 now_ns=now)), None)
                if covering is not None and covering.id is not None:  # counted, never dropped silently
                    tx.count_suppressed(suppression_id=covering.id, hits=len(finding.event_ids), at_ns=now)
                    self.counters[f"suppressed.{finding.rule}"] += len(finding.event_ids)
                    continue
                self._raise(tx, finding)
            tx.mark_detected(agent_id=agent_id, epoch=events[-1].epoch, seq=events[-1].seq)
        return len(events)

    def _raise(self, tx: Transaction, f: Finding) -> None:
        alert = raise_alert(tx=tx, rule=f.rule, severity=f.severity, user=f.user, agent_id=f.agent_id,
                            event_ids=f.event_ids, now_ns=self.clock(), last_event_ns=f.last_ns, summary=f.summary,
                            group_key=f.group_key)
        if alert.occurrences == 1:
            self.counters[f"alerts.{f.rule}"] += 1
            log.info("alert %s raised: %s", alert.id, alert.summary)
