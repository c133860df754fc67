"""Service functions shared by the CLI and the HTTP API: each opens nothing, takes a ledger, does one job.

They glue the ledger to the renderers (notice, CSV, Frappe) and to the file system at the edge.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from payroll_bridge.contract import decode_json, excluded_items_json, expect_object, expect_text, parse_period_wage
from payroll_bridge.errors import InvalidInput, PushError
from payroll_bridge.exports.frappe import FrappeClient, PushResult, additional_salary_records
from payroll_bridge.exports.neutral_csv import render_csv
from payroll_bridge.ledger import ExportBatch, Ledger
from payroll_bridge.notice import NoticeContent, NoticeLine, NoticeRefund, render_pdf, render_text
from payroll_bridge.period import Period
from payroll_bridge.rules import PeriodWage, claim_deadline
from payroll_bridge.settings import PayrollSettings

__all__ = ["parse_wages", "build_notice", "issue_notice", "write_export", "push_export"]


def parse_wages(text: str | bytes) -> tuple[str, list[PeriodWage]]:
    """Decodes WAGES.json: {"employee_id": ..., "periods": [same objects as the schedule's]}."""
    doc = expect_object(decode_json(text), "the wages", ("employee_id", "periods"), ("employee_id", "periods"))
    employee_id = expect_text(doc["employee_id"], "employee_id")
    if not isinstance(doc["periods"], list) or not doc["periods"]:
        raise InvalidInput("periods must be a non-empty list")
    wages: list[PeriodWage] = []
    seen: set[Period] = set()
    for i, raw in enumerate(doc["periods"]):
        wage = parse_period_wage(raw, f"periods[{i}]")
        if wage.period in seen:
            raise InvalidInput(f"periods[{i}].period {wage.period} is listed twice")
        seen.add(wage.period)
        wages.append(wage)
    return employee_id, wages


def build_notice(ledger: Ledger, *, case_id: str, settings: PayrollSettings, issued_on: date) -> NoticeContent:
    """Gathers what the notice says from the ledger."""
    case = ledger.case(case_id)
    employee = ledger.employee(case.employee_id)
    region = ledger.table.region(employee["region"])
    payload: dict[str, Any] = case.payload
    lines = [x for x in ledger.lines(case_id=case_id)]
    remaining = ledger.remaining_fen(employee_id=case.employee_id)[case_id]
    agreement = payload["agreement"]
    ends = Period.parse(employee["employment_ends"]) if employee["employment_ends"] else None

    def excluded(period: Period) -> tuple[tuple[str, int], ...]:
        wage = ledger.wage(employee_id=case.employee_id, period=period)
        if wage is None:
            return ()
        return tuple((str(i["name"]), int(str(i["amount_fen"]))) for i in excluded_items_json(wage, region))

    contributions = tuple(name for name, on in (
        ("个人缴纳的社会保险费", region is not None and region.excludes_social_insurance),
        ("个人缴纳的住房公积金", region is not None and region.excludes_housing_fund)) if on)
    return NoticeContent(
        notice_id=ledger.next_notice_id(case_id=case_id, issued_on=issued_on),
        issued_on=issued_on,
        employer=settings.employer_name,
        employee_id=case.employee_id,
        employee_name=employee["name"],
        case_id=case_id,
        incident_date=date.fromisoformat(payload["incident"]["date"]),
        incident_summary=str(payload["incident"].get("summary") or ""),
        loss_fen=case.loss_fen,
        award_fen=case.award_fen,
        documents=tuple(str(d["title"]) for d in payload["loss"]["documents"]),
        agreement_title=str(agreement.get("title") or "保密协议"),
        agreement_version=str(agreement["version"]),
        agreement_signed_on=date.fromisoformat(str(agreement["signed_at"])[:10]),
        lines=tuple(NoticeLine(x.line.period, x.line.deduction_fen, x.line.binding.value, x.minimum_wage_fen,
                               x.line.balance_after_fen, excluded(x.line.period)) for x in lines),
        remaining_fen=remaining,
        employment_ends=ends,
        appeal_days=settings.appeal_days,
        requires_written_notice=bool(region and region.requires_written_notice),
        excluded_items=tuple(i.name for i in region.excluded_items) if region else (),
        excludes_contributions=contributions,
        refunds=tuple(NoticeRefund(r.period, r.amount_fen, r.limit.value, r.paid_period)
                      for r in ledger.refunds(case_id=case_id)),
        claim_deadline=claim_deadline(ends) if ends is not None else None,
    )


def issue_notice(ledger: Ledger, *, case_id: str, settings: PayrollSettings, out_dir: Path, issued_on: date,
                 actor: str) -> dict[str, str]:
    """Writes the notice as .txt and .pdf into ``out_dir`` and records it, with the amount of each month."""
    content = build_notice(ledger, case_id=case_id, settings=settings, issued_on=issued_on)
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    txt = out_dir / f"{content.notice_id}.txt"
    pdf = out_dir / f"{content.notice_id}.pdf"
    txt.write_text(render_text(content), encoding="utf-8")
    pdf.write_bytes(render_pdf(content))
    ledger.record_notice(case_id=case_id, notice_id=content.notice_id, issued_on=issued_on,
                         amounts={x.period: x.deduction_fen for x in content.lines}, actor=actor)
    return {"notice_id": content.notice_id, "text": str(txt), "pdf": str(pdf)}


def write_export(ledger: Ledger, *, batch: ExportBatch, settings: PayrollSettings, csv_path: Path | None,
                 frappe_path: Path | None, actor: str) -> dict[str, str]:
    """Writes the batch's files and records each write in the audit."""
    written: dict[str, str] = {}
    if batch.export_id is None:
        return written
    if csv_path is not None:
        csv_path.write_text(render_csv(batch, settings.export), encoding="utf-8", newline="")
        ledger.audit_export_file(export_id=batch.export_id, fmt="csv", path=str(csv_path), actor=actor)
        written["csv"] = str(csv_path)
    if frappe_path is not None:
        records = [r["doc"] for r in additional_salary_records(batch, settings.frappe)]
        frappe_path.write_text(json.dumps(records, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        ledger.audit_export_file(export_id=batch.export_id, fmt="frappe", path=str(frappe_path), actor=actor)
        written["frappe"] = str(frappe_path)
    return written


def push_export(ledger: Ledger, *, export_id: str, settings: PayrollSettings, actor: str,
                transport: httpx.BaseTransport | None = None) -> PushResult:
    """Pushes an export to Frappe, skipping what it already took; PushError if anything is left."""
    batch = ledger.export_batch(export_id)
    done = ledger.pushed(export_id)
    records = additional_salary_records(batch, settings.frappe)
    with FrappeClient(settings.frappe, transport=transport) as client:
        result = client.push(records, skip=set(done))
    ledger.record_push(export_id=export_id, target=str(settings.frappe.url), accepted=result.accepted,
                       failed=result.failed, actor=actor)
    if result.failed:
        raise PushError(f"Frappe did not take {len(result.failed)} of {len(records)} record(s) of {export_id}: "
                        + "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items()))
                        + ". Run the push again: what was taken is skipped.")
    return PushResult({**done, **result.accepted}, {}, result.attempts)
