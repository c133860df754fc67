"""Fixtures of the cases tests: a real SQLite store, people of every role, alerts with stored evidence."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from collector.alerts.service import raise_alert
from collector.events.models import StoredBatch, StoredEvent
from collector.people.service import PeopleService
from collector.storage import open_store
from collector.storage.base import Store
from collector.web.app import create_app
from collector.web.security import session_csrf_token

PASSWORD = "correct horse battery"
DAY_NS = 86_400 * 10**9
PEOPLE = {"ana": "security_analyst", "sam": "security_analyst", "hana": "hr", "hugo": "hr", "aud": "auditor",
          "ivan": "it_admin"}


@dataclass
class World:
    """A collector app over a SQLite store, with tokens per person and alerts about alice."""

    store: Store
    client: TestClient
    people: PeopleService
    tokens: dict[str, str]
    alerts: list[int]
    incident_ns: int
    sessions: dict[str, str] = field(default_factory=dict)

    def api(self, who: str, method: str, url: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kw.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kw)

    def login(self, who: str) -> str:
        """Signs ``who`` in on the client (cookie) and returns the page's CSRF token."""
        if who not in self.sessions:
            with self.store.transaction() as tx:  # a password only for those who sign in: argon2 is slow on purpose
                self.people.reset_password(tx=tx, username=who, password=PASSWORD, actor="test")
            self.sessions[who] = self.people.login(store=self.store, username=who, password=PASSWORD, peer="test")
        self.client.cookies.set("shoumi_session", self.sessions[who])
        return session_csrf_token(self.sessions[who])


def add_alerts(store: Store, *, user: str = "alice", n: int = 3, first_ns: int) -> list[int]:
    """Stores evidence events of ``user`` from ``first_ns`` on and raises one alert per event."""
    agent = f"agt-{user}"
    events = [StoredEvent(agent_id=agent, epoch=1, seq=s, id=f"{agent}-e{s}", kind="file.read",
                          time_ns=first_ns + s * 10**9, path=f"/srv/design/{s}.dwg", user=user, attributes={})
              for s in range(1, n + 1)]
    ids = []
    with store.transaction() as tx:
        tx.store_batch(StoredBatch(agent, 1, 1, n, hashlib.sha256(agent.encode()).digest(), bytes(32), b"s" * 64, b"c",
                                   first_ns), events, expected_head=None)
        for e in events:
            a = raise_alert(tx=tx, rule="read_burst", severity="high", summary=f"reads {e.path}", now_ns=e.time_ns,
                            agent_id=agent, user=user, event_ids=[e.id])
            ids.append(int(a.id or 0))
    return ids


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = open_store(tmp_path / "collector")
    people = PeopleService(session_ttl_ns=3600 * 10**9)
    tokens = {}
    with store.transaction() as tx:
        for name, role in PEOPLE.items():
            people.create_user(tx=tx, username=name, role=role, password=None, actor="test")
            tokens[name] = people.create_api_token(tx=tx, username=name, actor="test")
    incident = time.time_ns() - 30 * DAY_NS
    alerts = add_alerts(store, first_ns=incident)
    client = TestClient(create_app(store=store, people=people), base_url="http://testserver")
    yield World(store, client, people, tokens, alerts, incident + 10**9)
    client.close()
    store.close()
