"""Several committers (a database server): every agent's batches, offered by many threads at once, are
stored in their order and exactly once, each agent's always by the same committer, and the agents
spread over the committers."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from collector.ingest.service import IngestService

from tests.conftest import ChainWriter, enroll_agent

AGENTS, BATCHES, EVENTS = 12, 10, 5


@pytest.fixture
def store(any_store: Any) -> Any:
    """Every store backend (memory, SQLite, PostgreSQL), each fresh: tests/conftest.py's any_store."""
    return any_store


def test_agents_offered_at_once_are_stored_in_order_once_by_their_own_committer(store: Any) -> None:
    ingest = IngestService(store, committers=3)
    writers = [ChainWriter(*enroll_agent(store)) for _ in range(AGENTS)]
    by_thread: dict[str, Counter[str]] = {}
    store_batch = ingest._admit_and_store

    def watched(tx: Any, offer: Any) -> Any:  # which committer thread stores which agent's batch
        by_thread.setdefault(threading.current_thread().name, Counter())[offer.batch.agent_id] += 1
        return store_batch(tx, offer)

    ingest._admit_and_store = watched  # type: ignore[method-assign]
    acks: dict[str, list[int]] = {w.agent_id: [] for w in writers}

    def agent(writer: ChainWriter) -> None:  # a stream: its batches submitted in order, Acks awaited after
        futures = [ingest.submit(writer.next(EVENTS)) for _ in range(BATCHES)]
        acks[writer.agent_id] = [f.result(timeout=60).acked_seq for f in futures]

    threads = [threading.Thread(target=agent, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ingest.close()

    assert all(a == [EVENTS * (i + 1) for i in range(BATCHES)] for a in acks.values()), acks
    for w in writers:
        seqs = [e.seq for e in store.events_after(agent_id=w.agent_id, epoch=0, seq=0, limit=10_000)]
        assert seqs == list(range(1, BATCHES * EVENTS + 1))  # in order, none twice, none missing
        assert store.chain_head(w.agent_id).last_seq == BATCHES * EVENTS
    owners = Counter(agent for seen in by_thread.values() for agent in seen)
    assert all(n == 1 for n in owners.values()) and len(owners) == AGENTS  # each agent: one committer
    assert len(by_thread) > 1  # and the agents are spread over the committers
    assert ingest.counters["batches.stored"] == AGENTS * BATCHES


def test_no_committer_is_refused() -> None:
    with pytest.raises(ValueError):
        IngestService(None, committers=0)  # type: ignore[arg-type]


def test_a_stream_naming_another_agent_is_refused_and_its_own_chain_stays_whole(store: Any) -> None:
    """A stream on agent A's certificate sends a batch naming agent B, then A's own. B's is refused for
    identity and nothing of B is stored; each of A's is either stored or answered ABORTED (after_refusal),
    and what is stored of A is the start of its chain, in order (a commit group takes its batches in agent
    order, so A's may go in before B's refusal; after it, none do)."""
    from collector.ingest.service import IngestError, StreamState

    ingest = IngestService(store, committers=3)
    (a_id, a_key), (b_id, b_key) = enroll_agent(store), enroll_agent(store)
    a, b = ChainWriter(a_id, a_key), ChainWriter(b_id, b_key)
    stream = StreamState()
    first = ingest.submit(b.next(EVENTS), authenticated_agent=a_id, stream=stream)
    behind = [ingest.submit(a.next(EVENTS), authenticated_agent=a_id, stream=stream) for _ in range(6)]
    with pytest.raises(IngestError) as refused:
        first.result(timeout=30)
    assert (refused.value.status, refused.value.reason) == ("PERMISSION_DENIED", "identity_mismatch")
    outcomes: list[int | str] = []
    for f in behind:
        try:
            outcomes.append(f.result(timeout=30).acked_seq)
        except IngestError as exc:
            outcomes.append(exc.reason)
    ingest.close()
    stored = [o for o in outcomes if isinstance(o, int)]
    assert stored == [EVENTS * (i + 1) for i in range(len(stored))]  # a prefix of A's chain, in order
    assert outcomes[len(stored):] == ["after_refusal"] * (len(outcomes) - len(stored))
    head = store.chain_head(a_id)
    assert (head.last_seq if head else 0) == EVENTS * len(stored)
    assert store.chain_head(b_id) is None
