"""HR's records on a case, checked; and the document the payroll bridge receives. Pure: values in, values out.

What HR records before it may confirm (the payroll bridge checks the same again, docs/payroll.md):
- ``loss``: the documented, actual loss (《劳动合同法》第九十条), entered in yuan and kept as integer
  fen, direct or indirect, with at least one supporting document (a file attached to the case);
- ``agreement``: the employee's signed confidentiality agreement (version, document SHA-256, signer,
  signing time, how identity was verified: 电子签名法 第十三、十四条), signed before the incident;
  its clause claims compensation, never a fixed penalty (void under 第二十五条);
- ``employee``: who the employee is on the payroll (payroll id, name, region, tier);
- ``notice``: when and how the employee was told, and the appeal window in days.
An ``appeal`` (received within the window) and HR's ``decision`` on it are records too.

Times without a zone are read as China time (UTC+8). Every refusal is an ``HrInputError`` whose
message says what to fix; nothing here touches the store.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping, Sequence

from collector.cases.models import Attachment, Case, HrKind, HrRecord

__all__ = ["HrInputError", "CHINA", "DEFAULT_APPEAL_DAYS", "APPEAL_DAYS_SOURCE", "REGIONS", "parse_yuan",
           "format_fen", "check_record", "current_records", "missing_for_confirmation", "payroll_payload",
           "MAX_LOSS_FEN"]

CHINA = timezone(timedelta(hours=8))
# No statute fixes the number of days: 15 is the payroll bridge's own default window
# (SHOUMI_PAYROLL_APPEAL_DAYS, docs/payroll.md "Notice and appeal window"), so both sides agree.
DEFAULT_APPEAL_DAYS = 15
APPEAL_DAYS_SOURCE = "the payroll bridge's default appeal window (SHOUMI_PAYROLL_APPEAL_DAYS, docs/payroll.md)"
# the regions the bridge's minimum-wage table knows (payroll_bridge/minimum_wage.json)
REGIONS: dict[str, str] = {"CN-SH": "上海", "CN-BJ": "北京", "CN-GD-SZ": "深圳", "CN-GD-GZ": "广州", "CN-JS": "江苏",
                           "CN-ZJ": "浙江"}
MAX_LOSS_FEN = 100_000_000 * 100  # one hundred million yuan: anything above is a typing error
_YUAN = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,2})?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class HrInputError(Exception):
    """A record that cannot be kept as given; the message says why (HTTP 422)."""

    status = 422


def parse_yuan(value: Any) -> int:
    """Reads an amount in yuan ("5000", "5000.5", "5000.50") as integer fen; refuses anything else."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is not None and text.startswith("-"):
        raise HrInputError("the loss must be more than 0 yuan: only an actual, documented loss is recovered")
    if text is None or not _YUAN.match(text):
        raise HrInputError(f"the loss must be an amount in yuan with at most two decimals, e.g. 5000.00 "
                           f"(got {str(value)[:40]!r})")
    try:
        fen = int(Decimal(text) * 100)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise HrInputError("the loss is not a number") from exc
    if fen <= 0:
        raise HrInputError("the loss must be more than 0 yuan: only an actual, documented loss is recovered")
    if fen > MAX_LOSS_FEN:
        raise HrInputError(f"the loss may be at most {format_fen(MAX_LOSS_FEN)} yuan")
    return fen


def format_fen(fen: int) -> str:
    """12345678 -> "123,456.78" (yuan)."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


def _text(data: Mapping[str, Any], key: str, *, label: str, max_len: int = 200, required: bool = True) -> str:
    raw = data.get(key)
    value = raw.strip() if isinstance(raw, str) else ""
    if not value:
        if required:
            raise HrInputError(f"{label} is missing")
        return ""
    if len(value) > max_len:
        raise HrInputError(f"{label} is longer than {max_len} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in value.replace("\n", "")):
        raise HrInputError(f"{label} holds control characters")
    return value


def _when(data: Mapping[str, Any], key: str, *, label: str) -> datetime:
    text = _text(data, key, label=label, max_len=40)
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise HrInputError(f"{label} must be a date and time such as 2024-03-01T10:00 (China time) or "
                           f"2024-03-01T10:00:00+08:00 (got {text[:40]!r})") from exc
    return found if found.tzinfo else found.replace(tzinfo=CHINA)


def _ns(when: datetime) -> int:
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


def _china(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, CHINA)


def check_record(*, kind: str, data: Mapping[str, Any], case: Case, attachments: Sequence[Attachment],
                 current: Mapping[str, HrRecord], now_ns: int) -> dict[str, Any]:
    """Checks one of HR's records against the case; returns it as it is kept, or raises HrInputError."""
    try:
        k = HrKind(kind)
    except ValueError as exc:
        raise HrInputError(f"unknown record {kind[:40]!r}; records are {', '.join(x.value for x in HrKind)}") from exc
    if k is HrKind.LOSS:
        return _loss(data, attachments)
    if k is HrKind.AGREEMENT:
        return _agreement(data, case, current)
    if k is HrKind.EMPLOYEE:
        return _employee(data)
    if k is HrKind.NOTICE:
        return _notice(data, case, now_ns)
    if k is HrKind.APPEAL:
        return _appeal(data, current, now_ns)
    return {"text": _text(data, "text", label="the decision", max_len=4000)}


def _loss(data: Mapping[str, Any], attachments: Sequence[Attachment]) -> dict[str, Any]:
    fen = parse_yuan(data.get("amount_yuan"))
    kind = _text(data, "kind", label="the kind of loss", required=False) or "direct"
    if kind not in ("direct", "indirect"):
        raise HrInputError("the kind of loss is 'direct' (直接经济损失) or 'indirect'")
    raw = data.get("documents")
    wanted = raw if isinstance(raw, (list, tuple)) else ([raw] if raw not in (None, "") else [])
    mine = {a.id: a for a in attachments}
    ids: list[int] = []
    for item in wanted:
        try:
            ident = int(item)
        except (TypeError, ValueError) as exc:
            raise HrInputError(f"supporting document {str(item)[:20]!r} is not an attachment id") from exc
        if ident not in mine:
            raise HrInputError(f"attachment {ident} is not a file of this case: attach the document to the case first")
        ids.append(ident)
    if not ids:
        raise HrInputError("the loss needs at least one supporting document (attach it to the case, then choose it)")
    return {"amount_fen": fen, "kind": kind, "documents": list(dict.fromkeys(ids)),
            "description": _text(data, "description", label="the description", max_len=2000, required=False)}


def _agreement(data: Mapping[str, Any], case: Case, current: Mapping[str, HrRecord]) -> dict[str, Any]:
    registry = data.get("registry")
    if isinstance(registry, Mapping):  # picked from the agreements registry (collector/agreements): its evidence
        data = {**registry, "clause": data.get("clause") or "compensation"}
    sha = _text(data, "document_sha256", label="the agreement's SHA-256", max_len=64).lower()
    if not _SHA256.match(sha):
        raise HrInputError("the agreement's SHA-256 must be 64 hexadecimal digits")
    signed = _when(data, "signed_at", label="the signing time")
    first = _china(case.incident_first_ns)
    if _ns(signed) >= case.incident_first_ns or signed.astimezone(CHINA).date() >= first.date():
        raise HrInputError(f"the agreement was signed {signed.isoformat()}, not before the incident "
                           f"(first event {first.isoformat(timespec='seconds')}, China time): an agreement signed "
                           "on or after the day of the incident does not bind that incident")
    clause = _text(data, "clause", label="the clause", required=False) or "compensation"
    if clause != "compensation":
        raise HrInputError("the clause relied on must claim compensation for the actual loss; a fixed penalty "
                           "(违约金) for confidentiality is void (《劳动合同法》第二十五条)")
    return {"title": _text(data, "title", label="the title", required=False) or "保密协议",
            "version": _text(data, "version", label="the agreement's version", max_len=64),
            "document_sha256": sha,
            "signed_by": _text(data, "signed_by", label="who signed", max_len=64),
            "signed_at": signed.isoformat(),
            "identity_check": _text(data, "identity_check", label="how the signer's identity was verified",
                                    max_len=500),
            "clause": clause,
            **({"agreement_record_id": int(registry["agreement_record_id"]), "platform": str(registry["platform"]),
                "evidence_ref": str(registry["evidence_ref"]), "text_sha256": str(registry["text_sha256"])}
               if isinstance(registry, Mapping) else {})}


def _employee(data: Mapping[str, Any]) -> dict[str, Any]:
    emp = _text(data, "employee_id", label="the payroll employee id", max_len=64)
    if not _EMPLOYEE_ID.match(emp):
        raise HrInputError("the payroll employee id is letters, digits, '.', '_' or '-' (as in the payroll system)")
    region = _text(data, "region", label="the region", max_len=16)
    if region not in REGIONS:
        raise HrInputError(f"unknown region {region!r}: one of {', '.join(REGIONS)}")
    tier_raw = data.get("tier")
    tier: int | None = None
    if tier_raw not in (None, ""):
        text = str(tier_raw).strip()
        if not (text.isascii() and text.isdigit() and len(text) == 1 and 1 <= int(text) <= 9):
            raise HrInputError("the minimum-wage tier is a whole number from 1 to 9 (leave it empty for the default)")
        tier = int(text)
    return {"employee_id": emp, "name": _text(data, "name", label="the employee's name", max_len=64),
            "region": region, "tier": tier}


def _notice(data: Mapping[str, Any], case: Case, now_ns: int) -> dict[str, Any]:
    served = _when(data, "served_at", label="when the notice was served")
    if _ns(served) < case.incident_first_ns:
        raise HrInputError("the notice cannot have been served before the incident")
    if _ns(served) > now_ns + 300 * 10**9:
        raise HrInputError("the notice is served in the future: record it once it has been served")
    raw_days = data.get("appeal_days")
    days = DEFAULT_APPEAL_DAYS
    if raw_days not in (None, ""):
        text = str(raw_days).strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 2 and 1 <= int(text) <= 90):
            raise HrInputError("the appeal window is a whole number of days from 1 to 90")
        days = int(text)
    return {"served_at": served.isoformat(), "method": _text(data, "method", label="how the notice was served",
                                                             max_len=200),
            "appeal_days": days, "window_ends": (served + timedelta(days=days)).isoformat()}


def _appeal(data: Mapping[str, Any], current: Mapping[str, HrRecord], now_ns: int) -> dict[str, Any]:
    notice = current.get(HrKind.NOTICE.value)
    if notice is None:
        raise HrInputError("no notice is on record: an appeal answers a notice")
    received = _when(data, "received_at", label="when the appeal was received")
    served = datetime.fromisoformat(str(notice.data["served_at"]))
    ends = datetime.fromisoformat(str(notice.data["window_ends"]))
    if not served <= received <= ends:
        raise HrInputError(f"the appeal was received {received.isoformat()}, outside the window "
                           f"{served.isoformat()} to {ends.isoformat()}")
    if _ns(received) > now_ns + 300 * 10**9:
        raise HrInputError("the appeal is received in the future")
    return {"received_at": received.isoformat(), "reason": _text(data, "reason", label="the appeal's reason",
                                                                 max_len=4000)}


def current_records(records: Sequence[HrRecord]) -> dict[str, HrRecord]:
    """The record in force of each kind: the newest."""
    out: dict[str, HrRecord] = {}
    for r in records:
        out[r.kind] = r
    return out


def missing_for_confirmation(current: Mapping[str, HrRecord], attachments: Sequence[Attachment]) -> list[str]:
    """What HR still has to record before the case can be confirmed or sent (empty: nothing)."""
    missing = []
    for kind, what in ((HrKind.LOSS, "the documented loss"), (HrKind.AGREEMENT, "the signed confidentiality agreement"),
                       (HrKind.EMPLOYEE, "the employee's payroll identity"), (HrKind.NOTICE, "the notice to the employee")):
        if kind.value not in current:
            missing.append(what)
    agreement, employee = current.get(HrKind.AGREEMENT.value), current.get(HrKind.EMPLOYEE.value)
    if agreement is not None and employee is not None and (
            str(agreement.data["signed_by"]).casefold() != str(employee.data["employee_id"]).casefold()):
        missing.append(f"an agreement signed by the employee (it names {agreement.data['signed_by']!r}, the payroll "
                       f"id is {employee.data['employee_id']!r}; only the employee's own signature binds them)")
    loss = current.get(HrKind.LOSS.value)
    if loss is not None:
        have = {a.id for a in attachments}
        if not any(d in have for d in loss.data.get("documents", ())):
            missing.append("a supporting document of the loss")
    return missing


def payroll_payload(*, case: Case, bridge_case_id: str, current: Mapping[str, HrRecord],
                    attachments: Sequence[Attachment], security: tuple[str, int], hr: tuple[str, int],
                    sender: str, sent_at_ns: int, number: int) -> dict[str, Any]:
    """The CASE.json of docs/payroll.md for this case; the acting people are in it, not in a header."""
    loss, agreement = current[HrKind.LOSS.value].data, current[HrKind.AGREEMENT.value].data
    employee, notice = current[HrKind.EMPLOYEE.value].data, current[HrKind.NOTICE.value].data
    by_id = {a.id: a for a in attachments}
    employee_doc: dict[str, Any] = {"id": employee["employee_id"], "name": employee["name"],
                                    "region": employee["region"]}
    if employee.get("tier") is not None:
        employee_doc["tier"] = employee["tier"]
    return {
        "case_id": bridge_case_id,
        "employee": employee_doc,
        "incident": {"date": _china(case.incident_first_ns).date().isoformat(), "summary": case.title},
        "confirmations": {
            "security": {"by": security[0], "at": _china(security[1]).isoformat(timespec="seconds")},
            "hr": {"by": hr[0], "at": _china(hr[1]).isoformat(timespec="seconds")},
        },
        "loss": {"amount_fen": loss["amount_fen"], "kind": loss["kind"],
                 "documents": [{"title": by_id[d].display_name, "sha256": by_id[d].sha256}
                               for d in loss["documents"] if d in by_id]},
        "agreement": {k: agreement[k] for k in ("title", "version", "document_sha256", "signed_by", "signed_at",
                                                "identity_check", "clause")},
        "notice": {"served_at": notice["served_at"], "method": notice["method"], "appeal_days": notice["appeal_days"]},
        "handoff": {"key": f"{case.id}/{number}", "number": number, "collector_case_id": case.id,
                    "sent_by": sender, "sent_at": _china(sent_at_ns).isoformat(timespec="seconds")},
    }
