"""A real collector web app on a real SQLite store, one user per role, and a browser-like sign-in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from collector.people.service import PeopleService
from collector.storage import SqlStore, open_store
from collector.web.app import create_app

PASSWORD = "correct horse battery"
ROLE_USERS = {"security_analyst": "ana", "it_admin": "ivan", "hr": "hana", "auditor": "aud", "employee": "emma"}


class Clock:
    """A clock the test moves: sessions, tokens and throttles read it."""

    def __init__(self) -> None:
        self.now = 1_800_000_000 * 10**9

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 10**9)


@dataclass
class World:
    store: SqlStore
    people: PeopleService
    app: FastAPI
    clock: Clock
    tokens: dict[str, str] = field(default_factory=dict)  # user name -> API token

    def client(self, address: str = "10.0.0.1") -> TestClient:
        """A browser at an address (the throttle counts per address)."""
        return TestClient(self.app, client=(address, 50000))

    def audit(self, limit: int = 200) -> list[Any]:
        """The newest audit entries, newest first."""
        with self.store.read() as tx:
            return list(tx.list_audit(cursor=None, limit=limit).items)

    def bearer(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[username]}"}


def csrf_of(client: TestClient, path: str = "/login") -> str:
    """The CSRF token a page gives this client now (pre-session, or its session's)."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert found, f"{path} carries a csrf_token field"
    return found.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD, **kwargs: Any) -> Any:
    """Signs in through the form, as a browser does."""
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_of(client)},
                       follow_redirects=False, **kwargs)


def light_hasher() -> PasswordHasher:
    """argon2id with little memory: for tests that sign in many times (the bound is tested with the real cost)."""
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def make_world(store: SqlStore, **people_args: Any) -> World:
    clock = Clock()
    people_args.setdefault("hasher", light_hasher())
    people = PeopleService(session_ttl_ns=12 * 3600 * 10**9, clock=clock, **people_args)
    world = World(store, people, create_app(store=store, people=people), clock)
    with store.transaction() as tx:
        for role, name in ROLE_USERS.items():
            people.create_user(tx=tx, username=name, role=role, password=PASSWORD, actor="test")
        for name in ROLE_USERS.values():
            world.tokens[name] = people.create_api_token(tx=tx, username=name, actor="test")
    return world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = open_store(tmp_path / "collector")
    try:
        yield make_world(store)
    finally:
        store.close()
