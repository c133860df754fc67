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
