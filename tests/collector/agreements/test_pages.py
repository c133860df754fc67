"""The agreements pages: who sees them, the forms, a refused import shown again with its reason."""

from __future__ import annotations

import re

from tests.collector.accounts.conftest import csrf_of, sign_in
from tests.collector.agreements.conftest import AgWorld
from tests.collector.agreements.pki import minimal_pdf, sign_pdf


def test_registry_and_person_pages_for_hr_and_readers(ag: AgWorld) -> None:
    ids = ag.setup_employee()
    hr = ag.w.client()
    assert sign_in(hr, "hana").status_code == 303
    page = hr.get("/agreements").text
    assert "在案协议" in page and "NDA-2024-v3" in page and 'href="/agreements/people/E-1001"' in page
    assert "第十七条" in page  # the notice's next version is prefilled with Shoumi's notice
    assert "保密协议全文" in hr.get(f"/agreements/versions/{ids['nda_v']}").text
    token = csrf_of(hr, "/agreements/people/E-1001")
    bad = hr.post("/agreements/people/E-1001/import", data={"csrf_token": token, "version_id": str(ids["nda_v"]),
                  "platform": "fadada", "evidence_ref": "FDD-1", "identity_check": "实名认证"},
                  files={"file": ("x.pdf", b"not a pdf at all", "application/pdf")}, follow_redirects=False)
    assert bad.status_code == 422 and "not a PDF" in bad.text and 'value="FDD-1"' in bad.text
    signed = sign_pdf(minimal_pdf(), ag.pki, tsa_url=ag.tsa.url)
    good = hr.post("/agreements/people/E-1001/import", data={"csrf_token": token, "version_id": str(ids["nda_v"]),
                   "platform": "qiyuesuo", "evidence_ref": "QYS-9", "identity_check": "契约锁实名认证"},
                   files={"file": ("nda.pdf", signed, "application/pdf")}, follow_redirects=False)
    assert good.status_code == 303
    shown = hr.get("/agreements/people/E-1001").text
    assert "签名有效" in shown and "契约锁" in shown and "可作为扣款依据" in shown
    refused = hr.post("/agreements", data={"csrf_token": csrf_of(hr, "/agreements"), "title": "x", "kind": "fine"},
                      follow_redirects=False)
    assert refused.status_code == 422 and "the kind is one of" in refused.text
    sec = ag.w.client()
    assert sign_in(sec, "ana").status_code == 303
    seen = sec.get("/agreements/people/E-1001").text
    assert "签名有效" in seen and "导入已签署的 PDF" not in seen  # security reads, cannot import
    assert not re.search(r'action="/agreements"', sec.get("/agreements").text)
