"""The agreement's members of a case bundle verify offline (shoumi_verify/agreement.py), and one flipped byte in
any member, or a member left out, is named."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from collector.agreements import service as svc_ag
from collector.agreements.evidence import bundle_members
from collector.agreements.models import default_notice_text
from collector.cases.models import Case, HrRecord
from collector.people.service import PeopleService
from collector.storage.memory import MemoryStore
from shoumi_verify.agreement import check_agreement, describe

from tests.collector.agreements.conftest import config
from tests.collector.agreements.pki import LocalTsa, Pki, minimal_pdf, sign_pdf

NOW = time.time_ns()


def _registry(store: MemoryStore) -> tuple[int, int]:
    with store.transaction() as tx:
        PeopleService(session_ttl_ns=10**12).create_user(tx=tx, username="emma", role="employee", password=None,
                                                         actor="t")
        nda = svc_ag.add_template(tx=tx, title="保密协议", kind="confidentiality", actor="hana", now_ns=NOW)
        v = svc_ag.add_version(tx=tx, template_id=nda.id, version="v3", text="保密协议全文", effective_from="2024-01-01",
                               actor="hana", now_ns=NOW)
        notice = svc_ag.add_template(tx=tx, title="员工监控告知书", kind="monitoring_notice", actor="hana", now_ns=NOW)
        n = svc_ag.add_version(tx=tx, template_id=notice.id, version="2024-1", text=default_notice_text(retention_days=365),
                               effective_from="2024-01-01", actor="hana", now_ns=NOW)
        svc_ag.link_employee(tx=tx, employee_id="E1001", user_name="alice", account="emma", actor="hana", now_ns=NOW)
    return int(v.id), int(n.id)


def _case_with(store: MemoryStore, record_id: int) -> int:
    with store.transaction() as tx:
        case = tx.add_case(Case("t", "security_confirmed", "alice", "ana", 1, 1, (), NOW + 10**15))
        tx.add_hr_record(HrRecord(case.id, "agreement", {"agreement_record_id": record_id}, "hana", NOW))
        return int(case.id)


def _ack(store: MemoryStore, cfg: Any, version_id: int) -> int:
    with store.transaction() as tx:
        sha = tx.get_agreement_version(version_id).sha256
        rec = svc_ag.acknowledge(tx=tx, account="emma", version_id=version_id, shown_sha256=sha,
                                 session_token="sess", now_ns=NOW)
    assert svc_ag.seal_one(store=store, cfg=cfg, record_id=rec.id, now=time.time_ns) == "sealed"
    return int(rec.id)


def _flipped(members: dict[str, bytes], name: str) -> dict[str, bytes]:
    if name == "record.json":  # its free text (identity check, platform) is the bundle manifest's to protect
        text = members[name].decode()
        at = text.index('"document_sha256":"') + 30
        return {**members, name: (text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1:]).encode()}
    data = bytearray(members[name])
    data[len(data) // 2] ^= 0x01
    return {**members, name: bytes(data)}


@pytest.fixture
def bundles(pki: Pki, tsa: LocalTsa) -> dict[str, dict[str, bytes]]:
    store = MemoryStore()
    cfg = config(pki, tsa)
    nda_v, notice_v = _registry(store)
    _ack(store, cfg, notice_v)
    signed = sign_pdf(minimal_pdf(), pki, tsa_url=tsa.url)
    verdict = svc_ag.validate_pdf(signed, [pki.ca_cert.public_bytes(Encoding.DER)])
    with store.transaction() as tx:
        pdf = svc_ag.import_pdf(tx=tx, employee_id="E1001", version_id=nda_v, content=signed, validation=verdict,
                                platform="fadada", evidence_ref="FDD-1", identity_check="实名认证", actor="hana",
                                now_ns=NOW)
    ack = _ack(store, cfg, nda_v)
    with store.read() as tx:
        typed_case = tx.add_case(Case("typed", "open", "alice", "ana", 1, 1, (), NOW))
        assert bundle_members(tx, int(typed_case.id)) == {}  # a typed agreement has nothing in the registry
    out = {}
    for name, rid in (("pdf", int(pdf.id)), ("ack", ack)):
        case_id = _case_with(store, rid)
        with store.read() as tx:
            out[name] = bundle_members(tx, case_id)
    return out


def test_the_agreement_members_hold_and_read_in_both_languages(bundles: dict[str, dict[str, bytes]]) -> None:
    pdf, ack = bundles["pdf"], bundles["ack"]
    assert {"record.json", "agreement.txt", "signed.pdf", "validation.json", "notice.json",
            "notice-acknowledgement.json", "notice-timestamp.tsr"} <= set(pdf)
    assert {"record.json", "agreement.txt", "acknowledgement.json", "timestamp.tsr", "notice.json"} <= set(ack)
    assert check_agreement(pdf) == [] and check_agreement(ack) == []
    zh, en = describe(pdf, "zh"), describe(ack, "en")
    assert "签署人证书" in " ".join(zh) and "RFC 3161 timestamp 20" in " ".join(en)


@pytest.mark.parametrize("kind", ["pdf", "ack"])
def test_one_flipped_byte_in_any_member_or_a_missing_member_is_named(bundles: dict[str, dict[str, bytes]],
                                                                     kind: str) -> None:
    members = bundles[kind]
    for name in sorted(members):
        problems = check_agreement(_flipped(members, name))
        assert problems, f"flipping a byte of {name} went unnoticed"
        gone = {k: v for k, v in members.items() if k != name}
        assert check_agreement(gone), f"leaving out {name} went unnoticed"


def test_a_token_over_another_document_is_refused(bundles: dict[str, dict[str, bytes]]) -> None:
    ack = bundles["ack"]
    swapped = {**ack, "timestamp.tsr": ack["notice-timestamp.tsr"]}
    assert any("another document" in p for p in check_agreement(swapped))
    assert hashlib.sha256(ack["acknowledgement.json"]).hexdigest() in ack["record.json"].decode()
