"""The agreements area's contract: memory, SQLite and PostgreSQL keep templates, employees and signed records alike."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from collector.agreements.models import Employee, SignedRecord, Template, Version, text_sha256
from collector.storage import AlreadyExists


def _record(version_id: int, *, source: str = "pdf", valid: bool = True, employee: str = "E-1") -> SignedRecord:
    return SignedRecord(employee, version_id, source, "fadada" if source == "pdf" else "in_product", "FDD-123", 100,
                        "face + ID card", "ab" * 32, "hana", 200, valid, {"valid": valid, "reason": "", "nested": [1]},
                        session_hash="" if source == "pdf" else "cd" * 32)


def test_templates_versions_and_their_names(any_store: Any) -> None:
    t = any_store.add_agreement_template(Template("保密协议", "confidentiality", "hana", 1))
    n = any_store.add_agreement_template(Template("监控告知书", "monitoring_notice", "hana", 2))
    assert [x.id for x in any_store.list_agreement_templates()] == [t.id, n.id]
    assert any_store.get_agreement_template(t.id) == t and any_store.get_agreement_template(10**9) is None
    v1 = any_store.add_agreement_version(Version(t.id, "v1", "文本 一", text_sha256("文本 一"), "2024-01-01", "hana", 3))
    v2 = any_store.add_agreement_version(Version(t.id, "v2", "文本 二", text_sha256("文本 二"), "2025-01-01", "hana", 4))
    any_store.add_agreement_version(Version(n.id, "v1", "告知", text_sha256("告知"), "2024-01-01", "hana", 5))
    with pytest.raises(AlreadyExists):
        any_store.add_agreement_version(Version(t.id, "v1", "again", text_sha256("again"), "2024-01-01", "hana", 6))
    assert [v.id for v in any_store.list_agreement_versions(t.id)] == [v1.id, v2.id]
    assert any_store.get_agreement_version(v2.id) == v2 and any_store.get_agreement_version(10**9) is None
    assert any_store.get_agreement_version(v1.id).text == "文本 一"


def test_employees_are_keyed_by_payroll_id_and_an_account_is_one_persons(any_store: Any) -> None:
    any_store.put_agreement_employee(Employee("E-1", "alice", None, "hana", 1))
    any_store.put_agreement_employee(Employee("E-2", "bob", "bob.acct", "hana", 2))
    any_store.put_agreement_employee(Employee("E-1", "alice", "alice.acct", "someone", 9))  # update keeps who made it
    e1 = any_store.get_agreement_employee("E-1")
    assert (e1.account, e1.created_by, e1.created_at_ns) == ("alice.acct", "hana", 1)
    assert any_store.agreement_employee_for_account("alice.acct").employee_id == "E-1"
    assert any_store.agreement_employee_for_account("nobody") is None
    assert [e.employee_id for e in any_store.agreement_employees_for_user("alice")] == ["E-1"]
    with pytest.raises(AlreadyExists):
        any_store.put_agreement_employee(Employee("E-2", "bob", "alice.acct", "hana", 3))
    assert any_store.get_agreement_employee("E-2").account == "bob.acct"  # nothing half-written
    assert [e.employee_id for e in any_store.list_agreement_employees()] == ["E-1", "E-2"]


def test_signed_records_keep_their_document_and_seal_once(any_store: Any) -> None:
    t = any_store.add_agreement_template(Template("保密协议", "confidentiality", "hana", 1))
    v = any_store.add_agreement_version(Version(t.id, "v1", "x", text_sha256("x"), "2024-01-01", "hana", 3))
    any_store.put_agreement_employee(Employee("E-1", "alice", None, "hana", 1))
    pdf = any_store.add_signed_record(_record(v.id, valid=False), b"%PDF-1.7 \x00\xff bytes")
    ack = any_store.add_signed_record(replace(_record(v.id, source="acknowledgement"), next_seal_ns=50), b'{"a":1}')
    assert any_store.get_signed_record(pdf.id) == pdf and pdf.validation["nested"] == [1] and not pdf.valid
    assert any_store.signed_document(pdf.id) == b"%PDF-1.7 \x00\xff bytes"
    assert any_store.signed_document(10**9) is None and any_store.get_signed_record(10**9) is None
    assert [r.id for r in any_store.signed_records("E-1")] == [pdf.id, ack.id]
    assert any_store.unsealed_records(now_ns=49, limit=10) == []
    assert [r.id for r in any_store.unsealed_records(now_ns=50, limit=10)] == [ack.id]  # PDFs are never "unsealed"
    assert any_store.save_seal(record_id=ack.id, tsr=None, sealed_at_ns=None, attempts=1, error="TSA down",
                               next_seal_ns=80)
    got = any_store.get_signed_record(ack.id)
    assert (got.tsr, got.seal_attempts, got.seal_error, got.next_seal_ns) == (None, 1, "TSA down", 80)
    assert any_store.unsealed_records(now_ns=79, limit=10) == []
    assert any_store.save_seal(record_id=ack.id, tsr=b"\x30\x03tsr", sealed_at_ns=90, attempts=2, error="",
                               next_seal_ns=0)
    assert not any_store.save_seal(record_id=ack.id, tsr=b"other", sealed_at_ns=91, attempts=3, error="",
                                   next_seal_ns=0)  # a seal is never replaced
    got = any_store.get_signed_record(ack.id)
    assert (got.tsr, got.sealed_at_ns, got.seal_attempts) == (b"\x30\x03tsr", 90, 2)
    assert any_store.unsealed_records(now_ns=10**18, limit=10) == []
