"""A collector app on a real SQLite store with analysts, an auditor, HR and IT, and an agent whose evidence
(reads, a copy out, writes to a stick, heartbeats, a capture gap) is stored as ingest would store it."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from collector.alerts.models import Alert
from collector.alerts.service import raise_alert
from collector.events.models import StoredBatch, StoredEvent
from collector.fleet.models import AgentRecord
from collector.people.service import PeopleService
from collector.privacy.service import pseudonym_of
from collector.storage import open_store
from collector.web.app import create_app

PASSWORD = "correct horse battery"
T0 = 1_764_547_200 * 10**9  # 2025-12-01T00:00:00Z
SECOND = 10**9


class World:
    """The app, its store, who may call it, and helpers to call it as them."""

    def __init__(self, store: Any, client: TestClient, tokens: dict[str, str]) -> None:
        self.store, self.client, self.tokens = store, client, tokens

    def get(self, who: str, url: str, **params: Any) -> Any:
        return self.client.get(url, params=params, headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def post(self, who: str, url: str, body: Any) -> Any:
        return self.client.post(url, json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def delete(self, who: str, url: str) -> Any:
        return self.client.delete(url, headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def code(self, name: str) -> str:
        with self.store.read() as tx:
            return pseudonym_of(tx=tx, user_name=name)

    def alert(self, *, rule: str = "read_burst", user: str = "alice", severity: str = "high", agent: str = "agt-1",
              event_ids: tuple[str, ...] = (), summary: str | None = None, at: int = T0) -> Alert:
        with self.store.transaction() as tx:
            return raise_alert(tx=tx, rule=rule, severity=severity, user=user, agent_id=agent, now_ns=at,
                               event_ids=event_ids, last_event_ns=at,
                               summary=summary or f"{user} read 40 files in /home/{user}/finance")

    def audit(self) -> list[Any]:
        with self.store.read() as tx:
            return list(reversed(tx.list_audit(cursor=None, limit=100_000).items))  # oldest first

    def sign_in(self, username: str, lang: str | None = None) -> TestClient:
        """A browser session of its own, signed in through the form."""
        browser = TestClient(self.client.app)
        token = csrf(browser, "/login")
        answer = browser.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token},
                              follow_redirects=False)
        assert answer.status_code == 303, answer.text
        if lang:  # the account's own choice, through the switch every page has
            switched = browser.post("/preferences/lang", data={"lang": lang, "next": "/alerts",
                                                                "csrf_token": csrf(browser, "/alerts")},
                                    follow_redirects=False)
            assert switched.status_code == 303, switched.text
        return browser


def csrf(browser: TestClient, url: str) -> str:
    """The CSRF token of the form on a page."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', browser.get(url).text)
    assert found, f"{url} has a form with a csrf_token"
    return found.group(1)


def evidence_events(agent_id: str = "agt-1") -> list[StoredEvent]:
    """An evening: reads, a copy into a sync folder, two writes to a stick, heartbeats with a silence, a gap."""
    def ev(seq: int, at_s: int, kind: str, **kw: Any) -> StoredEvent:
        return StoredEvent(agent_id=agent_id, epoch=1, seq=seq, id=f"ev-{seq}", kind=kind, time_ns=T0 + at_s * SECOND,
                           user=kw.pop("user", "alice"), attributes=kw.pop("attributes", {}), **kw)

    beats = [ev(i + 1, i * 30, "agent.heartbeat", attributes={"interval_s": 30}) for i in range(10)]
    late = [ev(20 + i, 900 + i * 30, "agent.heartbeat", attributes={"interval_s": 30}) for i in range(5)]  # 10 min silent
    return [*beats, *late,
            ev(40, 60, "file.read", path="/home/alice/finance/q3.xlsx", pid=4242, process="cp", exe="/usr/bin/cp",
               size=12_000, sha256="ab" * 32),
            ev(41, 61, "file.copy", path="/home/alice/finance/q3.xlsx", dest_path="/home/alice/Nutstore/q3.xlsx",
               pid=4242, process="cp", exe="/usr/bin/cp", size=12_000, sha256="ab" * 32,
               attributes={"source_paths": ["/home/alice/finance/q3.xlsx"], "match": "exact", "match_share": 1.0,
                           "destination_share": 1.0, "read_by_same_process": True}),
            ev(42, 120, "usb.write", path="/media/alice/KINGSTON/plan.zip", pid=5151, process="zip", exe="/usr/bin/zip",
               size=9_000, attributes={"source_paths": ["/srv/finance/plan.xlsx"], "match": "archive",
                                        "match_share": 0.8734, "destination_share": 0.61,
                                        "archive_members": ["plan.xlsx"], "device": "/dev/sdb1",
                                        "mountpoint": "/media/alice/KINGSTON"}),
            ev(43, 30, "usb.write", path="/media/alice/KINGSTON/a.txt", pid=5151, process="zip", exe="/usr/bin/zip",
               attributes={"source_paths": ["/srv/finance/a.txt"], "match": "partial", "match_share": 0.5}),
            ev(44, 400, "agent.capture_gap", user="", attributes={"source": "fanotify", "count": 17, "action": "rescan"})]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = open_store(tmp_path / "collector")
    people = PeopleService(session_ttl_ns=3600 * SECOND,  # a cheap hash: these tests are not about argon2's cost
                           hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    with store.transaction() as tx:
        for name, role in [("ana", "security_analyst"), ("bo", "security_analyst"), ("aud", "auditor"),
                           ("hana", "hr"), ("ivan", "it_admin")]:
            people.create_user(tx=tx, username=name, role=role, password=PASSWORD, actor="test")
        tx.add_enroll_token(token_hash="t", created_at_ns=0, expires_at_ns=2**62, created_by="t")
        tx.consume_enroll_token(token_hash="t", now_ns=1, agent=AgentRecord(
            "agt-1", b"k" * 32, "alice-laptop", "Linux", "1", T0 - 3600 * SECOND, heartbeat_interval_s=30.0,
            liveness="active", last_seen_ns=T0 + 1020 * SECOND))
        events = sorted(evidence_events(), key=lambda e: e.seq)
        tx.store_batch(StoredBatch("agt-1", 1, events[0].seq, events[-1].seq, b"h" * 32, bytes(32), b"s" * 64, b"c",
                                   T0), events, expected_head=None)
    with store.transaction() as tx:
        tokens = {n: people.create_api_token(tx=tx, username=n, actor="t") for n in ("ana", "bo", "aud", "hana", "ivan")}
    client = TestClient(create_app(store=store, people=people))
    yield World(store, client, tokens)
    client.close()
    store.close()


__all__ = ["World", "csrf", "evidence_events", "T0", "SECOND", "PASSWORD", "time"]
