"""HR's agreement step picks a signed agreement on record (collector/agreements) instead of typing its hash:
only a valid one signed before the incident's day is offered or taken; the rule checks stay."""

from __future__ import annotations

import datetime as dt
import re

from tests.collector.agreements.conftest import config
from tests.collector.agreements.pki import LocalTsa, make_pki, minimal_pdf, sign_pdf
from tests.collector.cases.conftest import DAY_NS, World
from tests.collector.cases.flow import confirm_security, ok, open_case, step


def _signed_on_record(world: World, *, days_before: int, tamper: bool = False) -> int:
    pki = make_pki()
    signed_at = dt.datetime.fromtimestamp((world.incident_ns - days_before * DAY_NS) / 1e9, dt.timezone.utc)
    tsa = LocalTsa(pki, fixed_dt=signed_at)  # the platform's TSA stamped it back then
    try:
        world.client.app.state.agreements = config(pki, tsa)
        pdf = sign_pdf(minimal_pdf(), pki, tsa_url=tsa.url)
    finally:
        tsa.stop()
    if tamper:
        at = pdf.index(b"Confidentiality")
        pdf = pdf[:at] + b"X" + pdf[at + 1:]
    templates = ok(world.api("hana", "GET", "/api/v1/agreements"))["items"]
    if not templates:
        t = ok(world.api("hana", "POST", "/api/v1/agreements", json={"title": "保密协议", "kind": "confidentiality"}), 201)
        ok(world.api("hana", "POST", f"/api/v1/agreements/{t['id']}/versions",
                     json={"version": "NDA-2024-v3", "text": "保密协议全文", "effective_from": "2024-01-01"}), 201)
        ok(world.api("hana", "POST", "/api/v1/agreements/people", json={"employee_id": "E1001", "user_name": "alice"}),
           201)
        templates = ok(world.api("hana", "GET", "/api/v1/agreements"))["items"]
    version_id = templates[0]["versions"][0]["id"]
    rec = ok(world.api("hana", "POST", "/api/v1/agreements/people/E1001/import",
                       files={"file": ("nda.pdf", pdf, "application/pdf")},
                       data={"version_id": str(version_id), "platform": "esign", "evidence_ref": "ESIGN-77",
                             "identity_check": "e签宝实名认证 + 短信验证码"}), 201)
    assert rec["valid"] is (not tamper), rec["validation"]
    return int(rec["id"])


def test_hr_picks_the_signed_agreement_on_record_and_confirms(world: World) -> None:
    case_id = open_case(world)
    confirm_security(world, case_id)
    good = _signed_on_record(world, days_before=60)
    bad = _signed_on_record(world, days_before=60, tamper=True)
    late = _signed_on_record(world, days_before=0)  # signed on the incident's day: binds nothing
    world.login("hana")
    page = world.client.get(f"/cases/{case_id}/hr").text
    offered = {int(x) for x in re.findall(r'name="agreement_record_id" value="(\d+)"', page)}
    assert offered == {good}, (offered, good, bad, late)
    refused = world.api("hana", "POST", f"/api/v1/cases/{case_id}/hr/agreement", json={"agreement_record_id": bad})
    assert refused.status_code == 422 and "does not validate" in refused.json()["detail"]
    too_late = world.api("hana", "POST", f"/api/v1/cases/{case_id}/hr/agreement", json={"agreement_record_id": late})
    assert too_late.status_code == 422 and "not before the incident" in too_late.json()["detail"]
    rec = ok(world.api("hana", "POST", f"/api/v1/cases/{case_id}/hr/agreement", json={"agreement_record_id": good}), 201)
    data = rec["data"] if "data" in rec else rec
    assert data["agreement_record_id"] == good and data["signed_by"] == "E1001" and len(data["document_sha256"]) == 64
    assert data["platform"] == "esign" and data["evidence_ref"] == "ESIGN-77"
    att = ok(world.api("hana", "POST", f"/api/v1/cases/{case_id}/attachments",
                       files={"file": ("鉴定报告.pdf", b"assessment", "application/pdf")}), 201)
    ok(world.api("hana", "POST", f"/api/v1/cases/{case_id}/hr/loss",
                 json={"amount_yuan": "5000", "kind": "direct", "documents": [att["id"]]}), 201)
    ok(world.api("hana", "POST", f"/api/v1/cases/{case_id}/hr/employee",
                 json={"employee_id": "E1001", "name": "张三", "region": "CN-SH"}), 201)
    served = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).isoformat()
    ok(world.api("hana", "POST", f"/api/v1/cases/{case_id}/hr/notice", json={"served_at": served, "method": "当面送达"}),
       201)
    assert ok(step(world, "hana", case_id, "hr_confirmed"))["state"] == "hr_confirmed"
