"""Checks a confirmed case before it may reach the ledger. Pure: a decoded document in, a decision out.

A case is accepted only when it carries:
- two confirmations, one from the security side and one from HR, each named by a stable account id
  (no e-mail spellings, so one person cannot pass as two), by two different people, neither of
  them the employee, and neither dated before the incident;
- the loss as a positive amount in fen with at least one supporting document (title and SHA-256),
  and its kind (``direct`` or ``indirect``: Guangdong allows only the direct loss, 广东省工资支付条例
  第十五条);
- no loss already claimed: the same document (by hash) or the same incident (employee, day,
  summary) behind another case is refused unless HR states, by name, from which cases the loss is
  distinct and why (劳动合同法 第九十条 allows the actual loss once);
- the signed confidentiality agreement: version, document hash, signed by the employee, identity
  check, signing time strictly before the day of the incident, and a clause that claims compensation for the actual
  loss (a fixed penalty, 违约金, is void for confidentiality: 《劳动合同法》第二十五条).
Every missing or failed point becomes a ``Refusal`` with a code, so that the ledger records why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Collection, Iterable

from payroll_bridge.errors import InvalidInput

__all__ = [
    "Confirmation",
    "LossDocument",
    "Agreement",
    "CaseIntake",
    "Refusal",
    "IntakeDecision",
    "ClaimedLoss",
    "DistinctLoss",
    "LOSS_KINDS",
    "MAX_CASE_BYTES",
    "summary_key",
    "assess",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A stable account id: what a directory or SSO gives a person once. An e-mail form ("wang.fang@corp")
# is refused so that one person cannot appear as two confirmers under two spellings.
_ACCOUNT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
LOSS_KINDS = ("direct", "indirect")
# A case is a few kilobytes; anything this large is refused before it is parsed or stored.
MAX_CASE_BYTES = 1024 * 1024


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
class DistinctLoss:
    """HR's statement that this loss is not the one behind the named cases, and why."""

    from_cases: frozenset[str]
    reason: str
    by: str


@dataclass(frozen=True)
class ClaimedLoss:
    """What an existing case already claims: its incident and its documents' hashes."""

    case_id: str
    employee_id: str
    incident_date: date | None
    incident_summary: str
    document_hashes: frozenset[str]


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
    loss_kind: str = "direct"
    distinct_from: DistinctLoss | None = None

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
    account = by.casefold()
    if not _ACCOUNT.match(account):
        out.refuse("CONFIRMER_NOT_ACCOUNT_ID",
                   f"the {label} confirmer {by[:64]!r} is not a stable account id (letters, digits, '.', '_', "
                   "'-'; no e-mail form): name each confirmer by their directory account")
        return None
    return Confirmation(side, account, at)


def summary_key(text: str) -> str:
    """An incident summary compared without case or white space."""
    return "".join(text.split()).casefold()


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


def _loss_kind(doc: Any, direct_only: bool, region: str | None, out: _Collector) -> str | None:
    loss = doc.get("loss")
    kind = _text(loss, "kind")
    if kind not in LOSS_KINDS:
        out.refuse("LOSS_KIND_MISSING",
                   "loss.kind must say whether the loss is 'direct' (直接经济损失) or 'indirect'")
        return None
    if kind == "indirect" and direct_only:
        out.refuse("LOSS_NOT_DIRECT",
                   f"{region} allows deducting only the direct economic loss caused by the employee's fault "
                   "(广东省工资支付条例 第十五条): an indirect loss must be claimed through arbitration")
    return kind


def _distinct(doc: Any, hr: Confirmation | None, out: _Collector) -> DistinctLoss | None:
    raw = doc.get("distinct_loss")
    if raw is None:
        return None
    cases = raw.get("from_cases") if isinstance(raw, dict) else None
    reason, by = _text(raw, "reason"), _text(raw, "by")
    ids = [c.strip() for c in cases if isinstance(c, str) and c.strip()] if isinstance(cases, list) else []
    if not ids or reason is None or by is None:
        out.refuse("DISTINCT_LOSS_INCOMPLETE",
                   "distinct_loss needs from_cases (the case ids), a reason and by (HR's account id)")
        return None
    if hr is not None and by.casefold() != hr.by:
        out.refuse("DISTINCT_LOSS_NOT_BY_HR",
                   f"distinct_loss must be stated by the HR confirmer {hr.by}, not {by[:64]!r}")
        return None
    return DistinctLoss(frozenset(ids), reason, by.casefold())


def _already_claimed(*, case_id: str | None, employee_id: str | None, incident: date | None, summary: str,
                     hashes: frozenset[str], distinct: DistinctLoss | None, claimed: Iterable[ClaimedLoss],
                     out: _Collector) -> None:
    stated = distinct.from_cases if distinct else frozenset()
    for other in claimed:
        if other.case_id == case_id or other.case_id in stated:
            continue
        shared = sorted(hashes & other.document_hashes)
        if shared:
            out.refuse("LOSS_DOCUMENTS_ALREADY_CLAIMED",
                       f"loss document(s) {', '.join(h[:12] + '…' for h in shared)} already support case "
                       f"{other.case_id}: the same loss may be recovered once (《劳动合同法》第九十条); if it is "
                       "a distinct loss, HR states so in distinct_loss")
        if (employee_id is not None and incident is not None and other.employee_id == employee_id
                and other.incident_date == incident and summary_key(other.incident_summary) == summary_key(summary)):
            out.refuse("INCIDENT_ALREADY_CLAIMED",
                       f"the incident of {incident} ({summary[:40]}) is already behind case {other.case_id}; "
                       "if it is a distinct loss, HR states so in distinct_loss")


def _agreement(doc: Any, incident: date | None, employee_id: str | None, out: _Collector) -> Agreement | None:
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
    signer = fields["signed_by"] or ""
    if employee_id is not None and signer.casefold() != employee_id.casefold():
        out.refuse("AGREEMENT_NOT_SIGNED_BY_EMPLOYEE",
                   f"the agreement was signed by {signer[:64]!r}, not by the employee {employee_id}: only the "
                   "employee's own signature binds them (电子签名法 第十三条)")
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


def assess(doc: Any, *, known_regions: Collection[str], direct_loss_only: Collection[str] = (),
           claimed: Iterable[ClaimedLoss] = ()) -> IntakeDecision:
    """Decides on a decoded CASE.json: accepted with a CaseIntake, or refused with every reason.

    ``direct_loss_only`` names the regions that allow only a direct loss; ``claimed`` is what the
    ledger's other cases already claim.
    """
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
    if security and hr and security.by == hr.by:
        out.refuse("SAME_PERSON_CONFIRMED_BOTH",
                   f"{security.by} confirmed for both the security side and HR: two different people must")
    for c in (security, hr):
        if c is None:
            continue
        if employee_id is not None and c.by == employee_id.casefold():
            out.refuse("CONFIRMED_BY_EMPLOYEE",
                       f"the employee {employee_id} confirmed their own case ({c.side}): someone else must")
        if incident is not None and c.at.date() < incident:
            out.refuse("CONFIRMATION_BEFORE_INCIDENT",
                       f"the {c.side} confirmation is dated {c.at.date()}, before the incident on {incident}")
    amount, documents = _loss(doc, out)
    kind = _loss_kind(doc, region in direct_loss_only, region, out)
    agreement = _agreement(doc, incident, employee_id, out)
    distinct = _distinct(doc, hr, out)
    summary = _text(incident_raw, "summary") or ""
    _already_claimed(case_id=case_id, employee_id=employee_id, incident=incident, summary=summary,
                     hashes=frozenset(d.sha256 for d in documents), distinct=distinct, claimed=claimed, out=out)

    if out.refusals:
        return IntakeDecision(case_id, employee_id, None, tuple(out.refusals))
    assert case_id and employee_id and name and region and incident and security and hr and amount and agreement
    assert kind is not None
    case = CaseIntake(
        case_id=case_id,
        employee_id=employee_id,
        employee_name=name,
        region=region,
        tier=tier,
        incident_date=incident,
        incident_summary=summary,
        security=security,
        hr=hr,
        loss_fen=amount,
        documents=documents,
        agreement=agreement,
        loss_kind=kind,
        distinct_from=distinct,
    )
    return IntakeDecision(case_id, employee_id, case, ())
