"""Checks a confirmed case before it may reach the ledger. Pure: a decoded document in, a decision out.

A case is accepted only when it carries:
- two confirmations, one from the security side and one from HR, by two different people;
- the loss as a positive amount in fen with at least one supporting document (title and SHA-256);
- the signed confidentiality agreement: version, document hash, signer, identity check, signing
  time strictly before the day of the incident, and a clause that claims compensation for the actual
  loss (a fixed penalty, 违约金, is void for confidentiality: 《劳动合同法》第二十五条).
Every missing or failed point becomes a ``Refusal`` with a code, so that the ledger records why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Collection

from payroll_bridge.errors import InvalidInput

__all__ = [
    "Confirmation",
    "LossDocument",
    "Agreement",
    "CaseIntake",
    "Refusal",
    "IntakeDecision",
    "assess",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Confirmation:
    side: str
    by: str
    at: datetime


@dataclass(frozen=True)
class LossDocument:
    title: str
    sha256: str


@dataclass(frozen=True)
class Agreement:
    title: str
    version: str
    document_sha256: str
    signed_by: str
    signed_at: datetime
    identity_check: str
    clause: str


@dataclass(frozen=True)
class CaseIntake:
    """An accepted case with everything the notice and the ledger need."""

    case_id: str
    employee_id: str
    employee_name: str
    region: str
    tier: int | None
    incident_date: date
    incident_summary: str
    security: Confirmation
    hr: Confirmation
    loss_fen: int
    documents: tuple[LossDocument, ...]
    agreement: Agreement

    @property
    def confirmed_at(self) -> date:
        """The day the second confirmation was given: the case's place in the queue."""
        return max(self.security.at, self.hr.at).date()


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class IntakeDecision:
    """Accepted (with the case) or refused (with every reason)."""

    case_id: str | None
    employee_id: str | None
    case: CaseIntake | None
    refusals: tuple[Refusal, ...] = field(default=())

    @property
    def accepted(self) -> bool:
        return self.case is not None and not self.refusals


class _Collector:
    def __init__(self) -> None:
        self.refusals: list[Refusal] = []

    def refuse(self, code: str, message: str) -> None:
        self.refusals.append(Refusal(code, message))


def _text(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _day(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _confirmation(doc: Any, side: str, label: str, out: _Collector) -> Confirmation | None:
    raw = doc.get("confirmations", {}).get(side) if isinstance(doc.get("confirmations"), dict) else None
    by, at = _text(raw, "by"), _when(raw.get("at") if isinstance(raw, dict) else None)
    if by is None or at is None:
        out.refuse(f"{side.upper()}_CONFIRMATION_MISSING",
                   f"no confirmation by the {label} side (who, in 'by', and when, in 'at' as an ISO time)")
        return None
    return Confirmation(side, by, at)


def _loss(doc: Any, out: _Collector) -> tuple[int | None, tuple[LossDocument, ...]]:
    loss = doc.get("loss")
    amount = loss.get("amount_fen") if isinstance(loss, dict) else None
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        out.refuse("LOSS_AMOUNT_MISSING",
                   "no loss amount: give loss.amount_fen as a positive whole number of fen (the actual, "
                   "documented loss; 《劳动合同法》第九十条)")
        amount = None
    docs: list[LossDocument] = []
    raw_docs = loss.get("documents") if isinstance(loss, dict) else None
    for raw in raw_docs if isinstance(raw_docs, list) else []:
        title, sha = _text(raw, "title"), _text(raw, "sha256")
        if title and sha and _SHA256.match(sha.lower()):
            docs.append(LossDocument(title, sha.lower()))
    if not docs:
        out.refuse("LOSS_DOCUMENTS_MISSING",
                   "the loss has no supporting document (each needs a title and the SHA-256 of the file)")
    return amount, tuple(docs)


def _agreement(doc: Any, incident: date | None, out: _Collector) -> Agreement | None:
    raw = doc.get("agreement")
    if not isinstance(raw, dict):
        out.refuse("AGREEMENT_MISSING", "no signed confidentiality agreement")
        return None
    fields = {k: _text(raw, k) for k in ("version", "document_sha256", "signed_by", "identity_check", "clause")}
    signed_at = _when(raw.get("signed_at"))
    missing = [k for k, v in fields.items() if v is None] + ([] if signed_at else ["signed_at"])
    if fields["document_sha256"] and not _SHA256.match(fields["document_sha256"].lower()):
        missing.append("document_sha256 (64 hex digits)")
    if missing:
        out.refuse("AGREEMENT_INCOMPLETE", f"the agreement lacks {', '.join(missing)}")
        return None
    assert signed_at is not None
    if incident is not None and signed_at.date() >= incident:
        out.refuse("AGREEMENT_NOT_BEFORE_INCIDENT",
                   f"the agreement was signed on {signed_at.date()}, not before the incident on {incident}")
    if fields["clause"] != "compensation":
        out.refuse("AGREEMENT_CLAUSE_NOT_COMPENSATION",
                   "the clause relied on must claim compensation for the actual loss ('compensation'); a "
                   "fixed penalty (违约金) for confidentiality is void (《劳动合同法》第二十五条)")
    return Agreement(
        title=_text(raw, "title") or "保密协议",
        version=fields["version"] or "",
        document_sha256=(fields["document_sha256"] or "").lower(),
        signed_by=fields["signed_by"] or "",
        signed_at=signed_at,
        identity_check=fields["identity_check"] or "",
        clause=fields["clause"] or "",
    )


def assess(doc: Any, *, known_regions: Collection[str]) -> IntakeDecision:
    """Decides on a decoded CASE.json: accepted with a CaseIntake, or refused with every reason."""
    if not isinstance(doc, dict):
        raise InvalidInput("a case must be a JSON object")
    out = _Collector()
    case_id = _text(doc, "case_id")
    if case_id is None:
        out.refuse("CASE_ID_MISSING", "no case_id")
    employee: dict[str, Any] = doc["employee"] if isinstance(doc.get("employee"), dict) else {}
    employee_id, name, region = _text(employee, "id"), _text(employee, "name"), _text(employee, "region")
    if employee_id is None or name is None:
        out.refuse("EMPLOYEE_MISSING", "the employee needs an id and a name")
    if region is None or region not in known_regions:
        out.refuse("REGION_UNKNOWN", f"employee.region {region!r} is not in the minimum-wage table "
                   f"({', '.join(sorted(known_regions))})")
    tier = employee.get("tier")
    if tier is not None and (isinstance(tier, bool) or not isinstance(tier, int) or tier < 1):
        out.refuse("EMPLOYEE_MISSING", "employee.tier must be a positive integer")
        tier = None
    incident_raw: dict[str, Any] = doc["incident"] if isinstance(doc.get("incident"), dict) else {}
    incident = _day(incident_raw.get("date"))
    if incident is None:
        out.refuse("INCIDENT_DATE_MISSING", "incident.date must be an ISO date")

    security = _confirmation(doc, "security", "security", out)
    hr = _confirmation(doc, "hr", "HR", out)
    if security and hr and security.by.casefold() == hr.by.casefold():
        out.refuse("SAME_PERSON_CONFIRMED_BOTH",
                   f"{security.by} confirmed for both the security side and HR: two different people must")
    amount, documents = _loss(doc, out)
    agreement = _agreement(doc, incident, out)

    if out.refusals:
        return IntakeDecision(case_id, employee_id, None, tuple(out.refusals))
    assert case_id and employee_id and name and region and incident and security and hr and amount and agreement
    case = CaseIntake(
        case_id=case_id,
        employee_id=employee_id,
        employee_name=name,
        region=region,
        tier=tier,
        incident_date=incident,
        incident_summary=_text(incident_raw, "summary") or "",
        security=security,
        hr=hr,
        loss_fen=amount,
        documents=documents,
        agreement=agreement,
    )
    return IntakeDecision(case_id, employee_id, case, ())
