"""Issue 16: the written-notice gate accepts the collector's electronic proof of service (acknowledged) and
refuses a notice only delivered, or not delivered; the gate's other rules are unchanged."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import case_doc
from payroll_bridge.errors import InvalidInput
from payroll_bridge.ledger import Ledger
from payroll_bridge.minimum_wage import load_table
from payroll_bridge.period import Period
from payroll_bridge.service_proof import parse_proof
from payroll_bridge.settings import PayrollSettings
from test_payroll_api import bearer, server  # noqa: F401 (the bridge served on loopback)

CN = timezone(timedelta(hours=8))
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=CN)


def proof(**changes: Any) -> dict[str, Any]:
    base = {"notice_id": "N-C-7-20261201", "channel": "wecom", "msgid": "msg000001",
            "text_sha256": hashlib.sha256("通知".encode()).hexdigest(),
            "delivered_at": "2026-12-01T09:00:00+08:00", "read_at": None, "opened_at": "2026-12-01T09:05:00+08:00",
            "acknowledged_at": "2026-12-01T09:06:00+08:00", "acknowledged_by": "zhangsan", "collector_notice": "k"}
    return {**base, **changes}


def test_an_acknowledged_notice_is_served_on_the_acknowledgement_day_in_china() -> None:
    p = parse_proof(proof(delivered_at="2026-12-01T01:00:00+08:00", acknowledged_at="2026-11-30T17:30:00+00:00"),
                    notice_id="N-C-7-20261201", now=NOW)
    assert p.served_on == date(2026, 12, 1)  # 01:30 in China
    assert p.document["channel"] == "wecom" and p.document["msgid"] == "msg000001"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"acknowledged_at": None}, "delivered but not acknowledged"),
    ({"delivered_at": None}, "never delivered"),
    ({"channel": "paper"}, "channel"),
    ({"msgid": ""}, "msgid"),
    ({"text_sha256": "xyz"}, "text_sha256"),
    ({"acknowledged_at": "2026-12-01T08:00:00+08:00"}, "before delivered_at"),
    ({"acknowledged_at": "2026-12-02T08:00:00+08:00"}, "future"),
    ({"acknowledged_at": "2026-12-01T09:06:00"}, "offset"),
    ({"notice_id": "N-other"}, "not N-C-7"),
])
def test_a_proof_that_does_not_hold_is_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse_proof(proof(**changes), notice_id="N-C-7-20261201", now=NOW)


def _issue(settings: PayrollSettings) -> str:
    today = datetime.now(CN).date()
    with Ledger(settings.resolved_ledger_path(), table=load_table()) as ledger:
        notice_id = ledger.next_notice_id(case_id="C-7", issued_on=today)
        ledger.record_notice(case_id="C-7", notice_id=notice_id, issued_on=today,
                             amounts={Period.parse("2026-12"): 160000}, actor="zhao.hr")
    return notice_id


def test_the_bridge_serves_a_notice_on_its_proof_and_keeps_it(
        server: tuple[str, PayrollSettings, dict[str, str]]) -> None:  # noqa: F811
    url, settings, tokens = server
    auth = bearer(tokens["collector"])
    with httpx.Client(base_url=url) as client:
        assert client.post("/cases", content=json.dumps(case_doc()), headers=auth).status_code == 201
        notice_id = _issue(settings)
        now = datetime.now(CN).replace(microsecond=0)
        path = f"/cases/C-7/notices/{notice_id}/service"
        unacked = client.post(path, content=json.dumps(proof(notice_id=notice_id, acknowledged_at=None)), headers=auth)
        assert unacked.status_code == 422 and "not acknowledged" in unacked.json()["detail"]
        good = proof(notice_id=notice_id, delivered_at=(now - timedelta(minutes=2)).isoformat(),
                     opened_at=None, acknowledged_at=now.isoformat())
        other = client.post(path, content=json.dumps(good), headers=bearer(tokens["hr-tool"]))
        assert other.status_code == 404  # only the client that filed the case
        served = client.post(path, content=json.dumps(good), headers=auth)
        assert served.status_code == 200 and served.json()["served_on"] == now.date().isoformat()
        again = client.post(path, content=json.dumps(good), headers=auth)  # a retry after a lost answer
        assert again.status_code == 200
        assert client.post("/cases/C-7/notices/N-none/service", content=json.dumps(proof(notice_id="N-none")),
                           headers=auth).status_code == 404
        assert client.post(path, content=b"not json", headers=auth).status_code == 422
    with Ledger(settings.resolved_ledger_path(), table=load_table()) as ledger:
        (n,) = ledger.notices(case_id="C-7")
        assert n["served_on"] == now.date().isoformat()
        assert n["service_proof"]["msgid"] == "msg000001" and n["service_proof"]["channel"] == "wecom"


def test_a_notice_served_on_its_proof_opens_the_gate_after_the_appeal_window(ledger: Ledger) -> None:
    from test_payroll_notices_refunds import accept, record

    accept(ledger)
    record(ledger, "2026-12", "2027-01")
    issued = date(2026, 11, 26)
    notice_id = ledger.next_notice_id(case_id="C-7", issued_on=issued)
    ledger.record_notice(case_id="C-7", notice_id=notice_id, issued_on=issued,
                         amounts={x.line.period: x.line.deduction_fen for x in ledger.lines(case_id="C-7")},
                         actor="zhao.hr")
    ledger._clock.at_least(date(2026, 11, 27))  # type: ignore[attr-defined]
    unserved = ledger.export(period=Period.parse("2026-12"), actor="zhao.hr")
    assert [b.blocked for b in unserved.blocked] == ["WRITTEN_NOTICE_MISSING"]  # delivered is not served
    p = parse_proof(proof(notice_id=notice_id, delivered_at="2026-11-27T09:00:00+08:00", opened_at=None,
                          acknowledged_at="2026-11-27T09:10:00+08:00"), notice_id=notice_id,
                    now=datetime(2026, 11, 27, 12, 0, tzinfo=CN))
    ledger.notice_served(case_id="C-7", notice_id=notice_id, served_on=p.served_on, actor="client:collector",
                         proof=p.document)
    ledger._clock.at_least(date(2027, 1, 5))  # type: ignore[attr-defined]  # past the 15-day window
    record(ledger, "2027-01")  # December deducted nothing: January's amount is unchanged
    january = ledger.export(period=Period.parse("2027-01"), actor="zhao.hr")
    assert [(x.notice_id, x.amount_fen) for x in january.lines] == [(notice_id, 160000)]
    (n,) = ledger.notices(case_id="C-7")
    assert n["served_on"] == "2026-11-27" and n["service_proof"]["acknowledged_at"] == "2026-11-27T09:10:00+08:00"
