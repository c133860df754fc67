"""Two people taking the same step at the same moment, on SQLite and on PostgreSQL: one wins, the other gets
409, and the outbox holds one row."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from collector.cases import service
from collector.storage import open_store
from tests.collector.cases.conftest import add_alerts
from tests.collector.cases.test_lifecycle_properties import _hr_records
from tests.conftest import _pg_store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        s = open_store(tmp_path / "c")
        yield s
        s.close()
    else:
        yield from _pg_store()


def test_two_hr_people_sending_at_once_make_one_hand_off(store: Any) -> None:
    now = time.time_ns()
    alerts = add_alerts(store, first_ns=now - 30 * 86_400 * 10**9, n=1)
    with store.transaction() as tx:
        case = service.open_case(tx=tx, alert_ids=alerts, title="t", actor="ana", now_ns=now)
        cid = int(case.id or 0)
        service.transition(tx=tx, case_id=cid, to="under_review", actor="ana", role="security_analyst", now_ns=now)
        service.transition(tx=tx, case_id=cid, to="security_confirmed", actor="ana", role="security_analyst",
                           now_ns=now)
        _hr_records(tx, cid, "hana", "hr", now, served_ns=now - 86_400 * 10**9)
        service.transition(tx=tx, case_id=cid, to="hr_confirmed", actor="hana", role="hr", now_ns=now)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def send(who: str) -> None:
        barrier.wait()
        try:
            with store.transaction() as tx:
                service.transition(tx=tx, case_id=cid, to="sent_to_payroll", actor=who, role="hr", now_ns=time.time_ns())
            outcomes.append("sent")
        except service.CaseError as exc:
            outcomes.append(str(exc.status))

    threads = [threading.Thread(target=send, args=(who,)) for who in ("hana", "hugo")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["409", "sent"]
    with store.read() as tx:
        assert len(tx.handoffs(cid)) == 1
        assert [h.to_state for h in tx.case_history(cid)].count("sent_to_payroll") == 1


def test_two_collectors_on_one_database_deliver_a_hand_off_once(store: Any, tmp_path: Path) -> None:
    """Two outbox workers (two collector processes on one database) polling at the same moment: the lease
    lets one of them send; the bridge files one intake."""
    from tests.collector.cases.test_handoff_bridge import Bridge, _cli

    import os

    from collector.cases.handoff import HandoffWorker, PayrollClient

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUMI_PAYROLL_")}
    env.update(SHOUMI_PAYROLL_LEDGER_PATH=str(tmp_path / "ledger.sqlite3"), XDG_STATE_HOME=str(tmp_path / "state"))
    token = _cli(env, "client", "create", "collector", "--actor", "it.admin")["token"]
    bridge = Bridge(tmp_path / "ledger.sqlite3")
    bridge.start()
    clients = [PayrollClient(bridge.url, token) for _ in range(2)]
    try:
        now = time.time_ns()
        alerts = add_alerts(store, first_ns=now - 30 * 86_400 * 10**9, n=1)
        with store.transaction() as tx:
            cid = int(service.open_case(tx=tx, alert_ids=alerts, title="t", actor="ana", now_ns=now).id or 0)
            for to, who, role in (("under_review", "ana", "security_analyst"),
                                  ("security_confirmed", "ana", "security_analyst")):
                service.transition(tx=tx, case_id=cid, to=to, actor=who, role=role, now_ns=now)
            _hr_records(tx, cid, "hana", "hr", now, served_ns=now - 86_400 * 10**9)
            service.transition(tx=tx, case_id=cid, to="hr_confirmed", actor="hana", role="hr", now_ns=now)
            service.transition(tx=tx, case_id=cid, to="sent_to_payroll", actor="hana", role="hr", now_ns=now)
        workers = [HandoffWorker(store, c) for c in clients]
        barrier = threading.Barrier(2)
        handled: list[int] = []

        def poll(w: HandoffWorker) -> None:
            barrier.wait()
            handled.append(w.run_once())

        threads = [threading.Thread(target=poll, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(handled) == [0, 1]
        with store.read() as tx:
            (row,) = tx.handoffs(cid)
        assert row.state == "accepted" and row.attempts == 1
        with bridge.ledger() as ledger:
            assert [i["decision"] for i in ledger.intakes()] == ["accepted"]
    finally:
        for c in clients:
            c.close()
        bridge.stop()
