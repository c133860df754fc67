"""The agreement behind a case, as members of the case's evidence bundle (the bundle is H6's: collector/evidence).

``bundle_members(tx, case_id)`` returns relative names and their exact bytes; ``shoumi_verify/agreement.py``
checks them offline without the collector:

- ``record.json``: the signed record (who, when, how identity was verified, the platform and its evidence
  reference, the document's SHA-256, the verdict) and the version it is of (name, SHA-256, effective date);
- ``agreement.txt``: the version's exact text (its SHA-256 is the version's);
- a PDF: ``signed.pdf`` (the imported file) and ``validation.json`` (pyHanko's verdict at import);
- an acknowledgement: ``acknowledgement.json`` (the exact canonical bytes that were timestamped) and
  ``timestamp.tsr`` (the DER RFC 3161 TimeStampResp; the TSA's certificate travels inside the token);
- ``notice.json``: the monitoring notice the employee acknowledged last (its text and hash), with
  ``notice-acknowledgement.json`` and ``notice-timestamp.tsr`` when sealed.

A case whose agreement was typed rather than picked from the registry has no members (empty dict).
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from collector.agreements.models import SignedRecord, Source, TemplateKind, canonical
from collector.storage.base import AgreementArea, CaseArea

__all__ = ["bundle_members", "record_document"]


def record_document(tx: AgreementArea, record: SignedRecord) -> dict[str, Any]:
    """The record and its version as ``record.json`` holds them."""
    version = tx.get_agreement_version(record.version_id)
    template = tx.get_agreement_template(version.template_id) if version else None
    return {"type": "shoumi.agreement-record/1", "id": record.id, "employee_id": record.employee_id,
            "source": record.source, "platform": record.platform, "evidence_ref": record.evidence_ref,
            "signed_at_ns": record.signed_at_ns, "identity_check": record.identity_check,
            "document_sha256": record.document_sha256, "valid": record.valid,
            "validation_sha256": hashlib.sha256(canonical(dict(record.validation))).hexdigest(),
            "sealed_at_ns": record.sealed_at_ns, "recorded_by": record.recorded_by,
            "recorded_at_ns": record.recorded_at_ns,
            "template": {"title": template.title if template else "", "kind": template.kind if template else ""},
            "version": {"name": version.version if version else "", "sha256": version.sha256 if version else "",
                        "effective_from": version.effective_from if version else ""}}


def _agreement_record_id(tx: CaseArea, case_id: int) -> int | None:
    records = [r for r in tx.hr_records(case_id) if r.kind == "agreement"]
    if not records:
        return None
    found = records[-1].data.get("agreement_record_id")  # the newest agreement record is the one in force
    return int(found) if isinstance(found, int) else None


def bundle_members(tx: Any, case_id: int) -> dict[str, bytes]:
    """The agreement backing the case and its evidence, by relative name (empty: none from the registry)."""
    record_id = _agreement_record_id(tx, case_id)
    record = tx.get_signed_record(record_id) if record_id is not None else None
    if record is None:
        return {}
    out: dict[str, bytes] = {}
    version = tx.get_agreement_version(record.version_id)
    out["record.json"] = canonical(record_document(tx, record))
    if version is not None:
        out["agreement.txt"] = version.text.encode("utf-8")
    body = tx.signed_document(record.id or 0) or b""
    if record.source == Source.PDF.value:
        out["signed.pdf"] = body
        out["validation.json"] = canonical(dict(record.validation))
    else:
        out["acknowledgement.json"] = body
        if record.tsr is not None:
            out["timestamp.tsr"] = record.tsr
    out.update(_notice_members(tx, record.employee_id))
    return out


def _notice_members(tx: AgreementArea, employee_id: str) -> Mapping[str, bytes]:
    """The monitoring notice the employee acknowledged last (PIPL §17), with its seal."""
    acks = []
    for r in tx.signed_records(employee_id):
        v = tx.get_agreement_version(r.version_id)
        t = tx.get_agreement_template(v.template_id) if v else None
        if r.source == Source.ACKNOWLEDGEMENT.value and t and v and t.kind == TemplateKind.MONITORING_NOTICE.value:
            acks.append((r, t, v))
    if not acks:
        return {}
    r, t, v = acks[-1]
    out = {"notice.json": canonical({"type": "shoumi.notice/1", "title": t.title, "version": v.version,
                                     "effective_from": v.effective_from, "text": v.text, "text_sha256": v.sha256,
                                     "acknowledgement_record": r.id, "sealed": r.tsr is not None})}
    out["notice-acknowledgement.json"] = tx.signed_document(r.id or 0) or b""
    if r.tsr is not None:
        out["notice-timestamp.tsr"] = r.tsr
    return out
