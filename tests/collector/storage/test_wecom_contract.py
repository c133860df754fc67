"""The WeCom area's contract: memory, SQLite and PostgreSQL keep userids and notices to employees alike."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from collector.storage import AlreadyExists
from collector.wecom.models import EmployeeNotice, text_sha256


def _notice(key: str, *, employee: str = "E-1", case: str | None = "C-1", at: int = 1, **kw: Any) -> EmployeeNotice:
    return EmployeeNotice(key, "deduction", employee, "扣款通知", "全文", text_sha256("全文"), "hana", at,
                          case_id=case, bridge_notice_id="N-1-20261201" if case else None, **kw)


def test_userids_are_set_replaced_and_removed(any_store: Any) -> None:
    assert any_store.get_wecom_userid("employee:E-1") is None
    any_store.put_wecom_userid(subject="employee:E-1", userid="zhangsan", actor="hana", now_ns=1)
    any_store.put_wecom_userid(subject="employee:E-1", userid="zhangsan2", actor="hana", now_ns=2)
    any_store.put_wecom_userid(subject="account:ana", userid="ana.wx", actor="hana", now_ns=3)
    assert any_store.get_wecom_userid("employee:E-1") == "zhangsan2"
    assert any_store.get_wecom_userid("account:ana") == "ana.wx"
    any_store.put_wecom_userid(subject="employee:E-1", userid=None, actor="hana", now_ns=4)
    assert any_store.get_wecom_userid("employee:E-1") is None


def test_notices_round_trip_and_are_found_by_employee_case_msgid(any_store: Any) -> None:
    a = _notice("k1", at=5)
    b = replace(_notice("k2", employee="E-2", case=None, at=3), kind="monitoring")
    any_store.add_employee_notice(a)
    any_store.add_employee_notice(b)
    with pytest.raises(AlreadyExists):
        any_store.add_employee_notice(_notice("k1"))
    assert any_store.get_employee_notice("k1") == a and any_store.get_employee_notice("nope") is None
    assert [n.key for n in any_store.list_employee_notices()] == ["k2", "k1"]
    assert [n.key for n in any_store.list_employee_notices(employee_id="E-1")] == ["k1"]
    assert [n.key for n in any_store.list_employee_notices(case_id="C-1")] == ["k1"]
    sent = replace(a, state="delivered", msgid="msg1", channel="wecom", address="zhangsan", attempts=1,
                   delivered_at_ns=10, read_at_ns=11, opened_at_ns=12, last_error=None)
    any_store.save_employee_notice(sent)
    assert any_store.employee_notice_by_msgid("msg1") == sent and any_store.employee_notice_by_msgid("x") is None


def test_due_notices_are_pending_ones_and_proofs_not_yet_reported(any_store: Any) -> None:
    any_store.add_employee_notice(_notice("p-due", at=1, next_attempt_ns=10))
    any_store.add_employee_notice(_notice("p-later", at=2, next_attempt_ns=100))
    any_store.add_employee_notice(_notice("delivered", at=3, state="delivered", delivered_at_ns=5))
    any_store.add_employee_notice(_notice("ack", at=4, state="acknowledged", delivered_at_ns=5, acknowledged_at_ns=6))
    any_store.add_employee_notice(_notice("ack-done", at=5, state="acknowledged", delivered_at_ns=5,
                                          acknowledged_at_ns=6, proof_reported_at_ns=7))
    any_store.add_employee_notice(replace(_notice("ack-monitoring", at=6, case=None, state="acknowledged",
                                                  delivered_at_ns=5, acknowledged_at_ns=6), kind="monitoring"))
    assert [n.key for n in any_store.due_employee_notices(now_ns=50, limit=10)] == ["p-due", "ack"]
    assert [n.key for n in any_store.due_employee_notices(now_ns=500, limit=1)] == ["p-due"]
