"""Steps of a case through the API, shared by the tests."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.collector.cases.conftest import World

AGREEMENT_SHA = hashlib.sha256(b"signed NDA").hexdigest()


def ok(reply: Any, status: int = 200) -> Any:
    assert reply.status_code == status, reply.text
    return reply.json()


def open_case(w: World, who: str = "ana", alerts: list[int] | None = None,
              title: str = "将设计图纸复制到个人网盘并外传") -> int:
    body = {"alert_ids": alerts if alerts is not None else w.alerts[:2], "title": title}
    return int(ok(w.api(who, "POST", "/api/v1/cases", json=body), 201)["id"])


def step(w: World, who: str, case_id: int, to: str, **extra: Any) -> Any:
    return w.api(who, "POST", f"/api/v1/cases/{case_id}/transition", json={"to": to, **extra})


def confirm_security(w: World, case_id: int, who: str = "ana") -> None:
    ok(step(w, who, case_id, "under_review"))
    ok(step(w, who, case_id, "security_confirmed"))


def hr_records(w: World, case_id: int, who: str = "hana", *, employee_id: str = "E1001",
               loss: str = "5000.00", doc: bytes | None = None) -> None:
    content = doc if doc is not None else f"third-party assessment of case {case_id}".encode()
    att = ok(w.api(who, "POST", f"/api/v1/cases/{case_id}/attachments",
                   files={"file": ("鉴定报告.pdf", content, "application/pdf")}), 201)
    ok(w.api(who, "POST", f"/api/v1/cases/{case_id}/hr/loss",
             json={"amount_yuan": loss, "kind": "direct", "documents": [att["id"]]}), 201)
    ok(w.api(who, "POST", f"/api/v1/cases/{case_id}/hr/agreement", json={
        "version": "NDA-2024-v3", "document_sha256": AGREEMENT_SHA, "signed_by": employee_id,
        "signed_at": "2024-03-01T10:00:00+08:00", "identity_check": "电子签约平台实名认证 + 短信验证码"}), 201)
    ok(w.api(who, "POST", f"/api/v1/cases/{case_id}/hr/employee",
             json={"employee_id": employee_id, "name": "张三", "region": "CN-SH"}), 201)
    from datetime import datetime, timedelta, timezone

    served = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    ok(w.api(who, "POST", f"/api/v1/cases/{case_id}/hr/notice",
             json={"served_at": served, "method": "当面送达，员工签收"}), 201)


def to_hr_confirmed(w: World, sec: str = "ana", hr: str = "hana", **kw: Any) -> int:
    case_id = open_case(w, sec, **kw)
    confirm_security(w, case_id, sec)
    hr_records(w, case_id, hr)
    ok(step(w, hr, case_id, "hr_confirmed"))
    return case_id
