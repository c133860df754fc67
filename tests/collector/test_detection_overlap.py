"""Detection reads and runs the next round while the last one waits for its write turn, and a state
that both rounds touch is read only after the earlier round's write: what it finds is what a run of
one round at a time finds, on every store."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

from collector.detection.service import DetectionStage
from collector.ingest.gate import WriteGate
from collector.ingest.service import IngestService
from shoumi.batch import sign_batch

from tests.conftest import ChainWriter, _burst, enroll_agent, make_event

MIN = 60_000_000_000
T0 = 10**18


class _Reading:
    """A transaction of the store that notes which agents' events were read."""

    def __init__(self, tx: Any, seen: "_Watched") -> None:
        self._tx, self._seen = tx, seen

    def events_after(self, *, agent_id: str, **kw: Any) -> Any:
        events = self._tx.events_after(agent_id=agent_id, **kw)
        self._seen.saw(agent_id)
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


class _Watched:
    """The test's store: the real one, with the agents whose events detection has read."""

    def __init__(self, store: Any) -> None:
        self.inner = store
        self.agents: list[str] = []
        self.changed = threading.Condition()

    def saw(self, agent_id: str) -> None:
        with self.changed:
            if agent_id not in self.agents:
                self.agents.append(agent_id)
            self.changed.notify_all()

    @contextmanager
    def read(self) -> Iterator[Any]:
        with self.inner.read() as tx:
            yield _Reading(tx, self)

    def transaction(self) -> Any:
        return self.inner.transaction()


class _HeldBack(WriteGate):
    """A write gate that lets the k-th of ``agents`` writes in only once agent k+1's events have been
    read (or after ``patience`` seconds; the last write at once, as there is no agent after it): it
    records, for each write, whether the next round was read meanwhile."""

    def __init__(self, store: _Watched, *, agents: int, patience: float = 10.0) -> None:
        super().__init__(None)
        self.store, self.agents, self.patience = store, agents, patience
        self.overlapped: list[bool] = []

    @contextmanager
    def held(self) -> Iterator[None]:
        k = len(self.overlapped) + 1
        with self.store.changed:
            read_next = k < self.agents and self.store.changed.wait_for(lambda: len(self.store.agents) > k,
                                                                        self.patience)
            self.overlapped.append(read_next)
        yield


def _store_reads(store: Any, users: list[str], reads_each: int) -> None:
    """One agent per user, each with ``reads_each`` reads a second apart."""
    ingest = IngestService(store)
    for user in users:
        agent_id, key = enroll_agent(store)
        batch = ChainWriter(agent_id, key).next(0)
        batch.ClearField("signature")
        for i in range(reads_each):
            batch.events.append(make_event(1 + i, user=user, time_ns=T0 + i * 1_000_000_000))
        sign_batch(batch, key)
        ingest.ingest(batch)


def _alerts(store: Any) -> list[tuple[str, int]]:
    with store.read() as tx:
        return sorted((a.user, len(a.event_ids)) for a in tx.list_alerts(cursor=None, limit=100).items
                      if a.rule == "read_burst")


@pytest.fixture
def store(any_store: Any) -> Any:
    """Every store backend (memory, SQLite, PostgreSQL): tests/conftest.py's any_store."""
    return any_store


def test_the_next_round_is_read_while_a_round_waits_to_be_written(store: Any) -> None:
    _store_reads(store, ["ann", "bob", "cai"], reads_each=4)
    watched = _Watched(store)
    gate = _HeldBack(watched, agents=3)
    stage = DetectionStage(watched, rules=_burst(threshold=3, minutes=1), clock=lambda: 7,  # type: ignore[arg-type]
                           write_gate=gate)
    assert stage.run_once(budget=1) == 12  # a round an agent: three rounds, three writes
    # the first two writes waited while the next agent was read and run; after the last, nothing is left
    assert gate.overlapped == [True, True, False]
    assert _alerts(store) == [("ann", 4), ("bob", 4), ("cai", 4)]
    assert stage.run_once(budget=1) == 0


def test_a_state_two_rounds_share_is_read_after_the_first_round_is_written(store: Any) -> None:
    # one user on two workstations: three reads on each are a burst of six (more than five in a minute)
    # only if the second round reads the state the first one is writing after that write
    _store_reads(store, ["dee", "dee"], reads_each=3)
    watched = _Watched(store)
    stage = DetectionStage(watched, rules=_burst(threshold=5, minutes=1), clock=lambda: 7,  # type: ignore[arg-type]
                           write_gate=_HeldBack(watched, agents=2))
    assert stage.run_once(budget=1) == 6
    assert _alerts(store) == [("dee", 6)]
