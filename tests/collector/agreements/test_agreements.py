"""Agreements on record over the real app: signed PDFs validated with pyHanko (a test CA, a local TSA), in-product
acknowledgements sealed with real RFC 3161 tokens, the TSA going down and coming back, and who sees what."""

from __future__ import annotations

import hashlib
import time

import pytest

from collector.agreements import service as svc_ag
from collector.agreements.service import AgreementError

from tests.collector.accounts.conftest import csrf_of, sign_in
from tests.collector.agreements.conftest import AgWorld, config
from tests.collector.agreements.pki import LocalTsa, make_pki, minimal_pdf, sign_pdf


def _import(ag: AgWorld, content: bytes, version_id: int, employee: str = "E-1001", name: str = "signed.pdf") -> object:
    return ag.api("hana", "POST", f"/api/v1/agreements/people/{employee}/import",
                  files={"file": (name, content, "application/pdf")},
                  data={"version_id": str(version_id), "platform": "fadada", "evidence_ref": "FDD-2024-000123",
                        "identity_check": "法大大实名认证：身份证 + 人脸识别"})


def test_a_pdf_signed_with_the_test_ca_and_tsa_validates_and_is_on_record(ag: AgWorld) -> None:
    ids = ag.setup_employee()
    signed = sign_pdf(minimal_pdf(), ag.pki, tsa_url=ag.tsa.url)
    rec = ag.ok(_import(ag, signed, ids["nda_v"]), 201)
    assert rec["valid"] and rec["backs_deduction"] and rec["validation"]["reason"] == ""
    v = rec["validation"]
    assert "张三 E-1001" in v["signer_subject"] and len(v["signer_sha256"]) == 64
    assert "Shoumi Test TSA" in v["tsa_subject"] and v["timestamp_time"] and v["signing_time"]
    assert rec["document_sha256"] == hashlib.sha256(signed).hexdigest()
    on_record = ag.ok(ag.api("aud", "GET", "/api/v1/agreements/people/E-1001"))  # auditors read it
    assert [r["id"] for r in on_record["records"]] == [rec["id"]] and on_record["pseudonym"].startswith("P-")
    got = ag.api("ana", "GET", f"/api/v1/agreements/records/{rec['id']}/document")
    assert got.content == signed and got.headers["content-disposition"].startswith("attachment")
    actions = [e.action for e in ag.w.audit()]
    assert {"agreement.template", "agreement.version", "agreement.employee", "agreement.import",
            "agreement.download"} <= set(actions)
    with ag.w.store.read() as tx:
        assert svc_ag.record_for_case(tx, rec["id"])["document_sha256"] == rec["document_sha256"]


def test_one_byte_changed_after_signing_does_not_validate_and_backs_no_deduction(ag: AgWorld) -> None:
    ids = ag.setup_employee()
    signed = sign_pdf(minimal_pdf(), ag.pki, tsa_url=ag.tsa.url)
    at = signed.index(b"Confidentiality")
    tampered = signed[:at] + b"c" + signed[at + 1:]
    rec = ag.ok(_import(ag, tampered, ids["nda_v"]), 201)  # kept on record, as not valid
    assert not rec["valid"] and not rec["backs_deduction"]
    assert "changed after it was signed" in rec["validation"]["reason"]
    with ag.w.store.read() as tx, pytest.raises(AgreementError, match="cannot back a deduction"):
        svc_ag.record_for_case(tx, rec["id"])


def test_a_pdf_from_another_ca_or_without_a_timestamp_is_recorded_not_valid(ag: AgWorld) -> None:
    ids = ag.setup_employee()
    stranger = ag.ok(_import(ag, sign_pdf(minimal_pdf(), make_pki("Unknown CA"), tsa_url=None), ids["nda_v"]), 201)
    assert not stranger["valid"] and "trust root" in stranger["validation"]["reason"]
    untimed = ag.ok(_import(ag, sign_pdf(minimal_pdf(), ag.pki, tsa_url=None), ids["nda_v"]), 201)
    assert not untimed["valid"] and "no RFC 3161 timestamp" in untimed["validation"]["reason"]


def test_what_is_not_a_signed_pdf_is_refused_with_the_reason_and_nothing_is_stored(ag: AgWorld) -> None:
    ids = ag.setup_employee()
    for content, why in ((b"MZ\x90\x00 not a pdf", "not a PDF"), (b"%PDF-1.7\n garbage", "not a readable PDF"),
                         (minimal_pdf(), "no signature"), (b"", "empty")):
        r = _import(ag, content, ids["nda_v"])
        assert r.status_code == 422 and why in r.json()["detail"], (why, r.text)
    assert _import(ag, sign_pdf(minimal_pdf(), ag.pki, tsa_url=None), ids["nda_v"], employee="E-404").status_code == 404
    ag.w.app.state.agreements = config(ag.pki, ag.tsa, max_upload=2048)
    big = _import(ag, b"%PDF-" + b"x" * 4096, ids["nda_v"])
    assert big.status_code == 413
    assert ag.ok(ag.api("hana", "GET", "/api/v1/agreements/people/E-1001"))["records"] == []
    assert ag.api("ana", "POST", "/api/v1/agreements/people/E-1001/import", files={"file": ("a.pdf", b"%PDF-")},
                  data={"version_id": "1", "platform": "fadada", "evidence_ref": "x",
                        "identity_check": "x"}).status_code == 403  # security reads, HR writes


def _employee_session(ag: AgWorld) -> object:
    c = ag.w.client()
    assert sign_in(c, "emma").status_code == 303
    return c


def test_the_employee_reads_and_acknowledges_and_the_record_is_sealed_by_the_tsa(ag: AgWorld) -> None:
    ids = ag.setup_employee()
    c = _employee_session(ag)
    page = c.get("/me/notices")
    assert page.status_code == 200 and "员工监控告知书" in page.text and "第二十四条" in page.text
    mine = c.get("/api/v1/me/notices").json()
    notice = next(i for i in mine["items"] if i["kind"] == "monitoring_notice")
    r = c.post(f"/me/notices/{notice['version_id']}/acknowledge",
               data={"text_sha256": notice["sha256"], "csrf_token": csrf_of(c, "/me/notices")}, follow_redirects=False)
    assert r.status_code == 303
    record = c.get("/api/v1/me/notices").json()["records"][0]
    assert record["seal"] == "sealed" and record["text_sha256"] == notice["sha256"] and ag.tsa.requests == 1
    with ag.w.store.read() as tx:
        stored = tx.get_signed_record(record["id"])
        body = tx.signed_document(record["id"])
    assert stored.tsr is not None and stored.session_hash == svc_ag.session_hash(c.cookies["shoumi_session"])
    assert "(password, browser session " in stored.identity_check  # how the employee was identified, as it was
    assert svc_ag.check_token(stored.tsr, hashlib.sha256(body).digest(), ag.pki.ca_cert.public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER)) == []
    assert '"text_sha256":"' + notice["sha256"] in body.decode()
    assert "已加盖 RFC 3161 可信时间戳" in c.get("/me/notices").text
    # a stale page (the text changed since) is refused; the employee sees nothing else
    stale = c.post(f"/api/v1/me/notices/{ids['nda_v']}/acknowledge", json={"text_sha256": "0" * 64},
                   headers={"X-CSRF-Token": csrf_of(c, "/me/notices")})
    assert stale.status_code == 409
    for url in ("/api/v1/agreements", "/api/v1/agreements/people/E-1001", "/api/v1/cases", "/api/v1/alerts",
                f"/api/v1/agreements/records/{record['id']}"):
        assert ag.api("emma", "GET", url).status_code == 403, url
    assert c.get("/agreements", follow_redirects=False).status_code == 403
    assert "audit" not in c.get("/me/notices").text.split("<main>")[0].lower()  # no nav links to others' pages


def test_tsa_down_the_acknowledgement_is_not_sealed_then_retried_and_sealed(ag: AgWorld) -> None:
    ids = ag.setup_employee()
    port = int(ag.tsa.url.rsplit(":", 1)[1].split("/")[0])
    ag.tsa.stop()
    c = _employee_session(ag)
    r = c.post(f"/me/notices/{ids['nda_v']}/acknowledge",
               data={"text_sha256": svc_ag.text_sha256("保密协议全文 第一条 ……"),
                     "csrf_token": csrf_of(c, "/me/notices")}, follow_redirects=False)
    assert r.status_code == 303
    page = c.get("/me/notices").text
    assert "尚未加盖时间戳" in page and "已加盖 RFC 3161" not in page  # never shown sealed before it is
    [rec] = c.get("/api/v1/me/notices").json()["records"]
    assert rec["seal"] == "pending" and rec["seal_attempts"] == 1 and "timestamp authority" in rec["seal_error"]
    assert not rec["backs_deduction"]
    with ag.w.store.read() as tx, pytest.raises(AgreementError, match="not yet timestamped"):
        svc_ag.record_for_case(tx, rec["id"])
    cfg = ag.w.app.state.agreements
    later = time.time_ns() + 31 * 10**9  # past the retry wait
    assert svc_ag.seal_pending(store=ag.w.store, cfg=cfg, now=lambda: later) == 0  # still down: pending, counted
    with ag.w.store.read() as tx:
        assert tx.get_signed_record(rec["id"]).seal_attempts == 2
    assert svc_ag.seal_pending(store=ag.w.store, cfg=cfg, now=lambda: later) == 0  # not due again yet
    back = LocalTsa(ag.pki, port=port)
    try:
        assert svc_ag.seal_pending(store=ag.w.store, cfg=cfg, now=lambda: later + 10**12) == 1
    finally:
        back.stop()
    [rec] = c.get("/api/v1/me/notices").json()["records"]
    assert rec["seal"] == "sealed" and rec["backs_deduction"] and rec["seal_attempts"] == 3
    assert {"agreement.acknowledge", "agreement.seal_failed", "agreement.seal"} <= {e.action for e in ag.w.audit()}


def test_registry_refusals(ag: AgWorld) -> None:
    ids = ag.setup_employee()
    again = ag.api("hana", "POST", f"/api/v1/agreements/{ids['nda']}/versions",
                   json={"version": "NDA-2024-v3", "text": "changed", "effective_from": "2025-01-01"})
    assert again.status_code == 409  # a version is never rewritten
    assert ag.api("hana", "POST", f"/api/v1/agreements/{ids['nda']}/versions",
                  json={"version": "v9", "text": "t", "effective_from": "2025-13-01"}).status_code == 422
    assert ag.api("hana", "POST", "/api/v1/agreements", json={"title": "x", "kind": "penalty"}).status_code == 422
    # an account linked to an employee must have the employee role, and belongs to one employee only
    assert ag.api("hana", "POST", "/api/v1/agreements/people",
                  json={"employee_id": "E-2", "account": "ana"}).status_code == 422
    assert ag.api("hana", "POST", "/api/v1/agreements/people",
                  json={"employee_id": "E-2", "account": "emma"}).status_code == 409
    assert ag.api("ana", "POST", "/api/v1/agreements", json={"title": "x", "kind": "confidentiality"}).status_code == 403


def test_a_token_not_under_the_configured_tsa_ca_does_not_seal(ag: AgWorld) -> None:
    ids = ag.setup_employee()
    from dataclasses import replace

    from cryptography.hazmat.primitives.serialization import Encoding

    other = make_pki("Another TSA CA").ca_cert.public_bytes(Encoding.DER)
    ag.w.app.state.agreements = replace(ag.w.app.state.agreements, tsa_ca=other)
    c = _employee_session(ag)
    reply = c.post(f"/api/v1/me/notices/{ids['notice_v']}/acknowledge",
                   json={"text_sha256": ag.ok(ag.api("hana", "GET", f"/api/v1/agreements/versions/{ids['notice_v']}"))
                         ["sha256"]}, headers={"X-CSRF-Token": csrf_of(c, "/me/notices")})
    rec = ag.ok(reply, 201)
    assert rec["seal"] == "pending" and "does not hold" in rec["seal_error"] and ag.tsa.requests == 1
    by_token = ag.ok(ag.api("emma", "POST", f"/api/v1/me/notices/{ids['nda_v']}/acknowledge", json={
        "text_sha256": ag.ok(ag.api("hana", "GET", f"/api/v1/agreements/versions/{ids['nda_v']}"))["sha256"]}), 201)
    with ag.w.store.read() as tx:
        assert "(password, API token " in tx.get_signed_record(by_token["id"]).identity_check


def test_a_version_text_is_kept_with_lf_line_ends_whoever_sent_it(ag: AgWorld) -> None:
    ids = ag.setup_employee()
    made = ag.ok(ag.api("hana", "POST", f"/api/v1/agreements/{ids['nda']}/versions",
                        json={"version": "v-crlf", "text": "第一条\r\n第二条", "effective_from": "2024-02-01"}), 201)
    assert made["sha256"] == svc_ag.text_sha256("第一条\n第二条")
    got = ag.ok(ag.api("ana", "GET", f"/api/v1/agreements/versions/{made['id']}"))
    assert got["text"] == "第一条\n第二条"
    assert ag.api("hana", "POST", f"/api/v1/agreements/{ids['nda']}/versions",
                  json={"version": "v-nul", "text": "a\x00b", "effective_from": "2024-02-01"}).status_code == 422
