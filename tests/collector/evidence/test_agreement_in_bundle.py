"""A case whose agreement comes from the registry (a signed PDF with a test CA and timestamp): the bundle
carries the agreement's members (collector/agreements/evidence.py), shoumi-verify checks them
(shoumi_verify/agreement.py) and names a changed one; the report says what the agreement is."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from collector.agreements import service as svc_ag
from collector.cases.models import HrRecord
from collector.transparency import load_tree_key
from shoumi_verify.check import verify_bundle

from tests.collector.agreements.conftest import pki, tsa  # noqa: F401  (fixtures)
from tests.collector.agreements.pki import LocalTsa, Pki, minimal_pdf, sign_pdf
from tests.collector.evidence.world import CaseWorld, build_case, export
from tests.verify.tamper import failure, flip, reseal


@pytest.fixture
def world(tmp_path: Path, pki: Pki, tsa: LocalTsa) -> Iterator[CaseWorld]:  # noqa: F811
    w = build_case(tmp_path / "collector", batches=2)
    now = time.time_ns()
    with w.store.transaction() as tx:
        nda = svc_ag.add_template(tx=tx, title="保密协议", kind="confidentiality", actor="hana", now_ns=now)
        version = svc_ag.add_version(tx=tx, template_id=nda.id, version="v3", text="保密协议全文",
                                     effective_from="2024-01-01", actor="hana", now_ns=now)
        svc_ag.link_employee(tx=tx, employee_id="E1001", user_name="alice", account=None, actor="hana", now_ns=now)
    signed = sign_pdf(minimal_pdf(), pki, tsa_url=tsa.url)
    verdict = svc_ag.validate_pdf(signed, [pki.ca_cert.public_bytes(Encoding.DER)])
    with w.store.transaction() as tx:
        record = svc_ag.import_pdf(tx=tx, employee_id="E1001", version_id=version.id, content=signed,
                                   validation=verdict, platform="fadada", evidence_ref="FDD-1", identity_check="实名认证",
                                   actor="hana", now_ns=now)
        tx.add_hr_record(HrRecord(w.case_id, "agreement", {"agreement_record_id": int(record.id)}, "hana", now))
    yield w
    w.store.close()


def test_the_agreement_travels_in_the_bundle_and_is_checked(world: CaseWorld) -> None:
    members = export(world, with_report=True).members
    assert {"agreement/record.json", "agreement/signed.pdf", "agreement/validation.json"} <= set(members)
    report = verify_bundle(members, lang="zh")
    line = next(d for code, d in report.passed if code == "ok.agreement")
    assert line["summary"]
    changed = {**members, "agreement/signed.pdf": flip(members["agreement/signed.pdf"])}
    assert (failure(changed) or pytest.fail("passed")).code == "member.hash"
    found = failure(reseal(changed, load_tree_key(world.data_dir)))  # the operator re-seals: the PDF still fails
    assert found is not None and found.code == "agreement.problem"
    from tests.collector.evidence.test_report import _text

    text = "".join(_text(members["report.pdf"]).split())
    assert "登记册记录" in text
