"""Keyset paging of the fleet, as an invariant: for any filter, sort, order and page size, following the
cursors yields exactly the matching agents, each once, in the order the model (pure Python) gives, on SQLite
as on the in-memory store."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.fleet.models import SORTS, STATUSES, AgentQuery, AgentRecord, status_of
from collector.storage import MemoryStore, open_store

from tests.conftest import PerCall

_HOSTS = ("alpha", "beta", "beta", "gamma", "mid", "mid", "zeta")


def _agents() -> list[tuple[AgentRecord, str, int | None, bool, tuple[str, ...]]]:
    out = []
    for i in range(40):
        record = AgentRecord(f"agt-{i:02d}", b"k" * 32, f"{_HOSTS[i % 7]}-{i % 3}", ("Linux 6", "Linux 5", "UOS")[i % 3],
                             ("0.1.0", "0.0.9", "0.2.0")[i % 3], 1000 - (i % 5))
        liveness = ("enrolled", "active", "silent", "stopped")[i % 4]
        out.append((record, liveness, None if i % 4 == 0 else 500 + (i % 6), i % 9 == 0,
                    ("lab",) if i % 2 else ()))
    return out


def _fill(store: Any) -> None:
    for record, liveness, seen, revoked, labels in _agents():
        store.add_enroll_token(token_hash=f"t-{record.agent_id}", created_at_ns=0, expires_at_ns=2**62,
                               created_by="t", labels=labels)
        assert store.consume_enroll_token(token_hash=f"t-{record.agent_id}", agent=record, now_ns=1) is None
        store.update_agent_liveness(agent_id=record.agent_id, liveness=liveness, last_seen_ns=seen)
        if revoked:
            store.revoke_agent(agent_id=record.agent_id, now_ns=5)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    sqlite = open_store(tmp_path_factory.mktemp("fleet") / "collector")
    found = {"memory": PerCall(MemoryStore()), "sqlite": PerCall(sqlite)}
    for store in found.values():
        _fill(store)
    yield found
    sqlite.close()


def _model(store: Any, q: AgentQuery) -> list[str]:
    def key(a: AgentRecord) -> Any:
        return {"hostname": a.hostname, "last_seen": a.last_seen_ns or 0, "version": a.agent_version,
                "status": status_of(a), "enrolled": a.enrolled_at_ns}[q.sort]

    found = [a for a in store.list_agents()
             if (q.status is None or status_of(a) == q.status) and (q.label is None or q.label in a.labels)
             and (q.version is None or a.agent_version == q.version) and (q.os is None or q.os.lower() in a.os.lower())
             and (q.text is None or q.text.lower() in a.hostname.lower() or q.text.lower() in a.agent_id.lower())]
    return [a.agent_id for a in sorted(found, key=lambda a: (key(a), a.agent_id), reverse=q.descending)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.none() | st.sampled_from(STATUSES), label=st.none() | st.just("lab"),
       version=st.none() | st.sampled_from(["0.1.0", "0.2.0"]), os=st.none() | st.sampled_from(["linux", "uos"]),
       text=st.none() | st.sampled_from(["mid", "BETA", "agt-1", "a-"]), sort=st.sampled_from(SORTS),
       descending=st.booleans(), limit=st.integers(1, 9))
def test_following_the_cursors_yields_every_match_once_in_order(
        stores: dict[str, Any], status: str | None, label: str | None, version: str | None, os: str | None,
        text: str | None, sort: str, descending: bool, limit: int) -> None:
    q = AgentQuery(status=status, label=label, version=version, os=os, text=text, sort=sort, descending=descending)
    for name, store in stores.items():
        walked, after = [], None
        while True:
            page = store.query_agents(q, after=after, limit=limit)
            assert len(page.items) <= limit
            walked += [r.agent.agent_id for r in page.items]
            if page.next_cursor is None:
                break
            after = tuple(json.loads(page.next_cursor))
        assert walked == _model(store, q), name
