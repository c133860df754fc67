"""argon2 checks (64 MiB each) are bounded: a flood of anonymous sign-ins waits a bounded time, then gets 503.

Real parts: the default argon2id hasher, the PeopleService's own count of checks running at once,
a real uvicorn on a loopback port, a SQLite store, many concurrent HTTP clients.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import uvicorn

from collector.people.service import PeopleService
from collector.storage import open_store
from collector.web.app import create_app

from tests.collector.accounts.conftest import PASSWORD

SLOTS = 2


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, PeopleService]]:
    store = open_store(tmp_path / "collector")
    people = PeopleService(session_ttl_ns=10**12, concurrent_password_checks=SLOTS, password_check_wait_s=0.3)
    with store.transaction() as tx:
        people.create_user(tx=tx, username="ana", role="security_analyst", password=PASSWORD, actor="t")
    server = uvicorn.Server(uvicorn.Config(create_app(store=store, people=people), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", people
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


def _sign_in(base: str, i: int) -> tuple[int, str, str | None]:
    with httpx.Client(base_url=base, timeout=30) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)  # type: ignore[union-attr]
        name = "ana" if i % 4 == 0 else f"stranger{i}"  # mostly anonymous guesses at names that do not exist
        reply = client.post("/login", data={"username": name, "password": PASSWORD if i % 8 == 0 else "a wrong guess",
                                            "csrf_token": token})
        return reply.status_code, reply.text, reply.headers.get("retry-after")


def test_a_flood_of_sign_ins_never_runs_more_checks_than_the_bound(served: tuple[str, PeopleService]) -> None:
    base, people = served
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda i: _sign_in(base, i), range(32)))
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {303, 401, 503}, statuses  # nothing else, no 500
    assert 1 <= people.checks_peak <= SLOTS  # never more argon2 checks (64 MiB each) at once than the bound
    busy = [(text, retry) for s, text, retry in results if s == 503]
    assert busy and people.checks_refused == len(busy)  # the rest waited 0.3 s at most, then were told to retry
    assert all(retry == "2" and ("try again in a few seconds" in text or "请几秒后重试" in text) for text, retry in busy)
    assert people.checks_running == 0


def test_checks_run_in_parallel_up_to_the_bound_with_the_service_alone(tmp_path: Path) -> None:
    store = open_store(tmp_path / "collector")
    people = PeopleService(session_ttl_ns=10**12, concurrent_password_checks=2, password_check_wait_s=30)
    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda i: _ignore(people, store, i), range(6)))
    finally:
        store.close()
    assert people.checks_peak == 2 and people.checks_refused == 0  # all waited their turn, 2 at a time


def _ignore(people: PeopleService, store: object, i: int) -> None:
    from collector.people.service import NotAuthenticated

    try:
        people.sign_in(store=store, username=f"nobody{i}", password="x" * 12, peer=f"10.9.0.{i}")  # type: ignore[arg-type]
    except NotAuthenticated:
        pass
