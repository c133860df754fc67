"""The fleet page at scale: 5,000 agents with health rows, labels, certificates and some open health alerts in a
real SQLite store (and PostgreSQL when SHOUMI_TEST_PG_DSN is set), and the time the /fleet page and the
GET /api/v1/agents API take to answer: the first page, a filtered page, a sorted page and a deep cursor (the
last page, reached by following the cursors), each compared with the 1 s limit of issue 11.

    .venv/bin/python bench/fleet.py [--agents 5000] [--repeat 7]

The requests go through the real web app in this process (FastAPI's TestClient: routing, authentication,
the store's queries and the template), signed in as IT with an API token (the page with the session cookie).
Figures: the median and the worst wall-clock time of ``--repeat`` calls, and the median CPU time of this
process per call (the machine is shared: CPU time is the steadier figure). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402

from collector.alerts.service import raise_alert  # noqa: E402
from collector.fleet.models import AgentHealth, AgentRecord  # noqa: E402
from collector.people.service import PeopleService  # noqa: E402
from collector.storage import open_store  # noqa: E402
from collector.storage.sql.store import SqlStore  # noqa: E402
from collector.web.app import create_app  # noqa: E402

LIMIT_S = 1.0
_LIVENESS = ("active", "active", "active", "silent", "stopped", "enrolled")
_OSES = ("Linux 6.1.0-18-amd64 (Debian 12)", "Linux 5.15.0-91-generic (Ubuntu 22.04)", "Linux 6.8.0 (UOS 20)")
_VERSIONS = ("0.1.0", "0.1.0", "0.1.0", "0.0.9", "0.0.8")


def populate(store: SqlStore, n: int) -> None:
    """n agents, as enrollment leaves them, each with a health row, a certificate, labels; some alerts."""
    now = time.time_ns()
    with store.transaction() as tx:
        for i in range(n):
            dept = ("finance", "sales", "rnd", "it", "hr")[i % 5]
            tx.add_enroll_token(token_hash=f"bench-{i:05d}", created_at_ns=now, expires_at_ns=now + 10**15,
                                created_by="bench", labels=(f"dept:{dept}", f"floor-{i % 7}"))
            agent = AgentRecord(f"agt-{i:05d}{'0' * 27}", b"k" * 32, f"ws-{dept}-{i:05d}", _OSES[i % 3],
                                _VERSIONS[i % 5], now - i * 10**9)
            assert tx.consume_enroll_token(token_hash=f"bench-{i:05d}", agent=agent, now_ns=now) is None
            tx.update_agent_liveness(agent_id=agent.agent_id, liveness=_LIVENESS[i % 6],
                                     last_seen_ns=None if i % 6 == 5 else now - (i % 600) * 10**9,
                                     heartbeat_interval_s=30.0)
            if i % 97 == 0:
                tx.revoke_agent(agent_id=agent.agent_id, now_ns=now)
            tx.put_agent_health(AgentHealth(agent.agent_id, now, now - i, "0.1.0", i % 300, (i % 300) * 700, 0,
                                            i % 11, i % 4, (i % 5) - 2, (f"user{i % 900:03d}", f"user{(i + 1) % 900:03d}")))
            tx.add_certificate(serial=10**6 + i, agent_id=agent.agent_id, not_before_ns=now,
                               not_after_ns=now + (i % 9 + 1) * 86400 * 10**9)
            if i % 50 == 0:
                raise_alert(tx=tx, rule="capture_gap", severity="medium", agent_id=agent.agent_id, now_ns=now,
                            summary="bench", group_key=f"capture_gap|{agent.agent_id}|1")


def timed(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Median and worst wall-clock, median CPU time of this process, in seconds."""
    call()  # warm: the first call compiles the queries and the template
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"median_s": round(statistics.median(walls), 4), "max_s": round(max(walls), 4),
            "cpu_median_s": round(statistics.median(cpus), 4)}


def run(store: SqlStore, label: str, n: int, repeat: int) -> dict[str, Any]:
    started = time.perf_counter()
    populate(store, n)
    built_s = time.perf_counter() - started
    people = PeopleService(session_ttl_ns=3600 * 10**9)
    with store.transaction() as tx:
        people.create_user(tx=tx, username="ivan", role="it_admin", password="a long enough password", actor="bench")
        api_token = people.create_api_token(tx=tx, username="ivan", actor="bench")
    client = TestClient(create_app(store=store, people=people))
    headers = {"Authorization": f"Bearer {api_token}"}
    page_client = TestClient(create_app(store=store, people=people))
    login = page_client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert csrf is not None
    page_client.post("/login", data={"username": "ivan", "password": "a long enough password",
                                     "csrf_token": csrf.group(1)}, follow_redirects=False)

    def api(query: str) -> Callable[[], Any]:
        def call() -> Any:
            answer = client.get(f"/api/v1/agents?{query}", headers=headers)
            assert answer.status_code == 200, answer.text
            return answer.json()
        return call

    def page(query: str) -> Callable[[], Any]:
        def call() -> Any:
            answer = page_client.get(f"/fleet?{query}")
            assert answer.status_code == 200 and "fleet-table" in answer.text, (query, answer.status_code)
        return call

    # the deep cursor: the last page of the whole fleet, reached by following the cursors (50 a page)
    cursor, pages = None, 0
    while True:
        got = api(f"limit=50{'&cursor=' + cursor if cursor else ''}")()
        pages += 1
        if got["next_cursor"] is None:
            break
        last_cursor, cursor = cursor, got["next_cursor"]
    assert pages == -(-n // 50), pages
    cases = {
        "first_page": "",
        "filtered": "status=online&label=dept:finance&version=0.1.0&os=debian",
        "text_search": "q=rnd-001",
        "sorted_last_seen_desc": "sort=last_seen&order=desc",
        "sorted_status": "sort=status",
        "deep_cursor": f"cursor={last_cursor}",
    }
    figures: dict[str, Any] = {}
    for name, query in cases.items():
        figures[f"api_{name}"] = timed(api(query), repeat)
        figures[f"page_{name}"] = timed(page(query), repeat)
    worst = max(f["max_s"] for f in figures.values())
    for name, f in figures.items():
        print(f"{label:10} {name:32} median {f['median_s'] * 1000:7.1f} ms  max {f['max_s'] * 1000:7.1f} ms  "
              f"cpu {f['cpu_median_s'] * 1000:7.1f} ms", file=sys.stderr)
    print(f"{label}: {n} agents built in {built_s:.1f} s; {pages} pages walked; worst call {worst * 1000:.0f} ms "
          f"({'within' if worst < LIMIT_S else 'OVER'} the {LIMIT_S:g} s limit)", file=sys.stderr)
    return {"store": label, "agents": n, "build_s": round(built_s, 1), "pages": pages, "worst_s": round(worst, 4),
            "within_limit": worst < LIMIT_S, "figures": figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="shoumi-fleet-bench-") as tmp:
        store = open_store(Path(tmp) / "collector")
        try:
            results.append(run(store, "sqlite", args.agents, args.repeat))
        finally:
            store.close()
    dsn = os.environ.get("SHOUMI_TEST_PG_DSN")
    if dsn:
        import uuid

        import sqlalchemy as sa

        schema = f"fleet_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        try:
            base = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
            url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
            store = SqlStore(sa.create_engine(url))
            try:
                results.append(run(store, "postgresql", args.agents, args.repeat))
            finally:
                store.close()
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            admin.dispose()
    print(json.dumps({"bench": "fleet", "limit_s": LIMIT_S, "results": results}))
    return 0 if all(r["within_limit"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
