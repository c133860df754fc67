"""Detection as its own stage over the stored stream, never inside ingest.

Each agent's position (epoch, seq) up to which detection has run is stored beside its chain head.
A run reads each pending agent's next events and the states of the rules they touch (a read
transaction each), lets the engine look at each event once (collector/detection/engine.py, pure), and
then, in one write transaction for the round, checks that no position has moved, stores the new
states, raises or extends the alerts and moves the positions: a crash neither skips events nor raises
an alert twice. While one round waits for its write turn and commits, the next round is read and run
on the calling thread (on SQLite the write waits for the ingest committer about a third of the time).
On PostgreSQL one collector at a time writes (a transaction-scoped advisory lock), so several
collectors on one database raise one alert per incident. Suppressed findings are counted on their
suppression, never dropped silently.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from collector.alerts.service import raise_alert
from shoumi.batch import ChainHead

from collector.detection.engine import Engine, Finding, State, build_rules
from collector.detection.models import RuleSet
from collector.events.models import StoredEvent
from collector.ingest.gate import WriteGate
from collector.storage.base import Store, Transaction

__all__ = ["DetectionStage"]

log = logging.getLogger("shoumi.collector.detection")


@dataclass
class _Run:
    """One agent's events since its position, and what the rules found in them."""

    agent_id: str
    position: tuple[int, int]
    events: Sequence[StoredEvent]
    keys: set[tuple[str, str]]
    head: ChainHead | None
    findings: list[Finding]


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

    def run_once(self, *, max_agents: int = 200, budget: int = 10_000) -> int:
        """Runs detection over what was stored since the last run; returns how many events it looked at.

        Agents are read and run one by one (no lock held), and the results of up to ``budget`` events
        are written in one transaction: on SQLite each write waits its turn with ingest, so one turn
        serves many agents. Rule states read in a round stay in memory for the agents after (a user on
        two workstations has one state). While a round waits for its turn and commits, the next round's
        agents are read and run (``_Writes``): a round that needs a state the one being written touches
        waits for that commit first, so every state is read after the last write of it."""
        with self.store.read() as tx:
            pending = tx.agents_behind_detection(limit=max_agents)
        i = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="detection-write") as pool:
            writes = _Writes(pool, self._write)
            try:
                while i < len(pending) and not writes.halted:
                    runs: list[_Run] = []
                    states: dict[tuple[str, str], State] = {}
                    loaded: set[tuple[str, str]] = set()
                    looked = 0
                    while i < len(pending) and looked < budget:
                        run = self._read_and_run(pending[i], states, loaded, writes)
                        runs.append(run)
                        looked += len(run.events)
                        i += 1
                    writes.submit(runs, states)
            finally:
                writes.settle()
        self.counters["events.detected"] += writes.stored
        return writes.stored

    def run_until_idle(self, *, limit: int = 10_000) -> int:
        """Runs until nothing is pending (tests, the end of a bench, a stop); returns the events looked at."""
        total = 0
        for _ in range(limit):
            n = self.run_once()
            total += n
            if n == 0:
                return total
        return total

    def _read_and_run(self, agent_id: str, states: dict[tuple[str, str], State], loaded: set[tuple[str, str]],
                      writes: _Writes) -> _Run:
        with self.store.read() as tx:
            position = tx.detected_upto(agent_id)
            events = tx.events_after(agent_id=agent_id, epoch=position[0], seq=position[1], limit=self.chunk)
            head = tx.chain_head(agent_id)
        keys = self.engine.keys(events)
        if writes.touches(keys):
            writes.settle()  # the round being written changes one of these states: read it after that commit
        wanted = sorted(keys - loaded)
        if wanted:
            with self.store.read() as tx:  # a snapshot after any write just waited for
                states.update(tx.load_rule_states(wanted))
            loaded.update(wanted)
        findings = self.engine.run(states, events)  # pure: no lock is held while the rules run
        return _Run(agent_id, position, events, keys, head, findings)

    def _write(self, runs: list[_Run], states: dict[tuple[str, str], State]) -> int | None:
        """Stores the round's states, alerts and positions in one transaction; None: another collector
        holds detection; 0: a position moved meanwhile, nothing written."""
        with self.write_gate.held(), self.store.transaction() as tx:
            if not tx.claim_detection():
                return None
            if any(tx.detected_upto(r.agent_id) != r.position for r in runs):
                return 0  # someone else ran one of these agents meanwhile: look again next time
            touched = sorted(_touched(runs))
            tx.save_rule_states({k: states[k] for k in touched if k in states})
            now = self.clock()
            active = tx.list_suppressions(active_at_ns=now) if any(r.findings for r in runs) else []
            for r in runs:
                for finding in r.findings:
                    covering = next((x for x in active if x.covers(rule=finding.rule, user=finding.user,
                                                                     path=finding.path, now_ns=now)), None)
                    if covering is not None and covering.id is not None:  # counted, never dropped silently
                        tx.count_suppressed(suppression_id=covering.id, hits=len(finding.event_ids), at_ns=now)
                        self.counters[f"suppressed.{finding.rule}"] += len(finding.event_ids)
                        continue
                    self._raise(tx, finding)
            # The positions last, in agent order: their rows are the chain heads ingest locks (in that order
            # too, so no deadlock), held from here to the commit only, not while the alerts are raised.
            for r in sorted(runs, key=lambda r: r.agent_id):
                if r.events:
                    tx.mark_detected(agent_id=r.agent_id, epoch=r.events[-1].epoch, seq=r.events[-1].seq)
                elif r.head is not None:  # nothing left to read (pruned by retention): catch up with the head
                    tx.mark_detected(agent_id=r.agent_id, epoch=r.head.epoch, seq=r.head.last_seq)
        return sum(len(r.events) for r in runs)

    def _raise(self, tx: Transaction, f: Finding) -> None:
        alert = raise_alert(tx=tx, rule=f.rule, severity=f.severity, user=f.user, agent_id=f.agent_id,
                            event_ids=f.event_ids, now_ns=self.clock(), last_event_ns=f.last_ns, summary=f.summary,
                            group_key=f.group_key)
        if alert.occurrences == 1:
            self.counters[f"alerts.{f.rule}"] += 1
            log.info("alert %s raised: %s", alert.id, alert.summary)


def _touched(runs: list[_Run]) -> set[tuple[str, str]]:
    """The rule states a round stores: those of the agents that had events."""
    return {k for r in runs if r.events for k in r.keys}


class _Writes:
    """The one round being written (on the pool's thread) while the calling thread reads the next.

    A round's write checks that its agents' positions have not moved, so a round read while the one
    before was written stands on its own: its agents are others (each pending agent is read once a
    run), and a state both touch is read only after the earlier write (``touches``, ``settle``)."""

    def __init__(self, pool: ThreadPoolExecutor,
                 write: Callable[[list[_Run], dict[tuple[str, str], State]], int | None]) -> None:
        self._pool = pool
        self._write = write
        self._future: Future[int | None] | None = None
        self._keys: set[tuple[str, str]] = set()
        self._looked = 0
        self.stored = 0
        self.halted = False  # another collector holds detection, or a position moved: no further rounds

    def submit(self, runs: list[_Run], states: dict[tuple[str, str], State]) -> None:
        """Writes this round once the one before it is written (at most one round waits)."""
        self.settle()
        if self.halted:
            return
        self._keys = _touched(runs)
        self._looked = sum(len(r.events) for r in runs)
        self._future = self._pool.submit(self._write, runs, states)

    def touches(self, keys: set[tuple[str, str]]) -> bool:
        """Whether the round being written stores one of these states."""
        return self._future is not None and not self._keys.isdisjoint(keys)

    def settle(self) -> None:
        """Waits for the round being written, if any (its exception, if it failed, is raised here)."""
        future, self._future = self._future, None
        if future is None:
            return
        stored = future.result()
        if stored is None:
            self.halted = True  # another collector runs detection now
        else:
            self.stored += stored
            if stored == 0 and self._looked:
                self.halted = True  # someone else moved a position meanwhile: look again next time
