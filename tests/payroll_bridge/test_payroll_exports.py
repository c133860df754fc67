"""Exports: the neutral CSV, Frappe "Additional Salary" files, and the push to a real HTTP server."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest
from pydantic import SecretStr

from conftest import Cli, FakeFrappe, case_doc, cli_notify, notify, wages_doc
from payroll_bridge.errors import PushError
from payroll_bridge.exports import CSV_COLUMNS, additional_salary_records, render_csv
from payroll_bridge.ledger import Ledger
from payroll_bridge.period import Period
from payroll_bridge.services import parse_wages, push_export
from payroll_bridge.settings import ExportSettings, FrappeSettings, PayrollSettings


def _setup(ledger: Ledger, *, cases: int = 1) -> str:
    for i in range(cases):
        doc = case_doc(f"C-{7 + i}", loss_fen=100000, confirmed=f"2026-11-{20 + i}")
        assert ledger.intake(payload=json.dumps(doc), actor="zhao.hr").decision.accepted
    employee, wages = parse_wages(json.dumps(wages_doc(periods=("2026-12",))))
    ledger.record_wages(employee_id=employee, wages=wages, actor="payroll")
    for i in range(cases):
        notify(ledger, f"C-{7 + i}")
    batch = ledger.export(period=Period(2026, 12), actor="zhao.hr")
    assert batch.export_id
    return batch.export_id


def _settings(site: FakeFrappe, tmp_path: Path, **frappe: Any) -> PayrollSettings:
    return PayrollSettings(ledger_path=tmp_path / "ledger.sqlite3", frappe=FrappeSettings(
        url=site.url, api_key="k3y", api_secret=SecretStr("s3cret"), company="守密示例有限公司",
        backoff_seconds=0.01, **frappe))


def test_neutral_csv_has_every_column_and_one_row_per_deduction(ledger: Ledger) -> None:
    export_id = _setup(ledger, cases=2)
    text = render_csv(ledger.export_batch(export_id), ExportSettings())
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["idempotency_key"], r["amount_fen"], r["binding"]) for r in rows] == [
        ("shoumi:C-7:2026-12", "100000", "BALANCE"), ("shoumi:C-8:2026-12", "60000", "CAP20")]
    assert rows[0]["legal_basis"] == "《工资支付暂行规定》第十六条；《劳动合同法》第九十条"
    assert {r["component_code"] for r in rows} == {"SHOUMI_LOSS"} and rows[0]["period"] == "2026-12"


def test_frappe_records_are_non_recurring_one_per_line_and_refer_to_the_case(ledger: Ledger) -> None:
    export_id = _setup(ledger, cases=2)
    records = additional_salary_records(ledger.export_batch(export_id), FrappeSettings(company="ACME"))
    docs = [r["doc"] for r in records]
    assert [(d["ref_docname"], d["amount"], d["payroll_date"]) for d in docs] == [
        ("C-7", "1000.00", "2026-12-01"), ("C-8", "600.00", "2026-12-01")]
    assert all(d["doctype"] == "Additional Salary" and d["is_recurring"] == 0 for d in docs)
    assert all(d["overwrite_salary_structure_amount"] == 0 and "docstatus" not in d for d in docs)


def test_push_creates_records_with_token_auth_and_is_idempotent(ledger: Ledger, frappe: FakeFrappe,
                                                                 tmp_path: Path) -> None:
    export_id = _setup(ledger, cases=2)
    settings = _settings(frappe, tmp_path, submit=True)
    result = push_export(ledger, export_id=export_id, settings=settings, actor="zhao.hr")
    assert sorted(result.accepted.values()) == ["HR-ADS-0001", "HR-ADS-0002"]
    assert [(r["ref_docname"], r["amount"], r["docstatus"]) for r in frappe.records] == [
        ("C-7", "1000.00", 1), ("C-8", "600.00", 1)]
    again = push_export(ledger, export_id=export_id, settings=settings, actor="zhao.hr")
    assert again.accepted == result.accepted and len(frappe.records) == 2
    assert [e.action for e in ledger.audit_log()].count("export.pushed") == 2


def test_push_retries_server_errors(ledger: Ledger, frappe: FakeFrappe, tmp_path: Path) -> None:
    export_id = _setup(ledger)
    frappe.fail_next = 2
    result = push_export(ledger, export_id=export_id, settings=_settings(frappe, tmp_path), actor="zhao.hr")
    assert list(result.accepted) == ["shoumi:C-7:2026-12"] and len(frappe.records) == 1
    assert result.attempts == 4  # 2 failed look-ups, the look-up, the POST


def test_lost_response_is_not_pushed_twice(ledger: Ledger, frappe: FakeFrappe, tmp_path: Path) -> None:
    export_id = _setup(ledger)
    frappe.drop_after_save = 1
    result = push_export(ledger, export_id=export_id, settings=_settings(frappe, tmp_path), actor="zhao.hr")
    assert len(frappe.records) == 1 and result.accepted == {"shoumi:C-7:2026-12": "HR-ADS-0001"}


def test_push_gives_up_after_the_retries_and_a_later_run_finishes(ledger: Ledger, frappe: FakeFrappe,
                                                                  tmp_path: Path) -> None:
    export_id = _setup(ledger)
    frappe.fail_next = 10
    with pytest.raises(PushError, match="after 2 attempts"):
        push_export(ledger, export_id=export_id, settings=_settings(frappe, tmp_path, retries=1), actor="a")
    assert frappe.records == []
    frappe.fail_next = 0
    push_export(ledger, export_id=export_id, settings=_settings(frappe, tmp_path), actor="a")
    assert len(frappe.records) == 1


def test_wrong_token_is_reported_not_retried(ledger: Ledger, frappe: FakeFrappe, tmp_path: Path) -> None:
    export_id = _setup(ledger)
    settings = _settings(frappe, tmp_path)
    settings.frappe.api_secret = SecretStr("wrong")
    with pytest.raises(PushError, match="HTTP 401"):
        push_export(ledger, export_id=export_id, settings=settings, actor="a")
    assert len(frappe.requests) == 1


def test_cli_export_writes_files_pushes_and_never_twice(cli: Cli, write_json: Callable[..., Path],
                                                        tmp_path: Path, frappe: FakeFrappe) -> None:
    env = {"SHOUMI_PAYROLL_LEDGER_PATH": str(tmp_path / "ledger.sqlite3"),
           "SHOUMI_PAYROLL_FRAPPE__URL": frappe.url, "SHOUMI_PAYROLL_FRAPPE__API_KEY": "k3y",
           "SHOUMI_PAYROLL_FRAPPE__API_SECRET": "s3cret", "SHOUMI_PAYROLL_FRAPPE__COMPANY": "ACME",
           "SHOUMI_PAYROLL_FRAPPE__BACKOFF_SECONDS": "0.01", "SHOUMI_PAYROLL_APPEAL_DAYS": "1"}
    assert cli("intake", "--actor", "zhao.hr", str(write_json("case.json", case_doc())), env=env).code == 0
    assert cli("wages", str(write_json("w.json", wages_doc(periods=("2026-12", "2027-01")))), env=env).code == 0
    cli_notify(cli, env)
    out = cli("export", "--period", "2026-12", "--actor", "zhao.hr", "--csv", "dec.csv", "--frappe", "dec.json",
              "--push", env=env)
    assert out.code == 0, out.stderr
    doc = out.json()
    assert doc["export_id"] == "X-2026-12-001" and doc["pushed"] == {"shoumi:C-7:2026-12": "HR-ADS-0001"}
    assert "shoumi:C-7:2026-12,E1001,2026-12,SHOUMI_LOSS,160000,C-7" in (tmp_path / "dec.csv").read_text()
    assert json.loads((tmp_path / "dec.json").read_text())[0]["amount"] == "1600.00"
    again = cli("export", "--period", "2026-12", "--actor", "zhao.hr", "--csv", "dec2.csv", "--push", env=env)
    assert again.code == 0 and again.json()["lines"] == [] and again.json()["already_exported"] == 1
    assert not (tmp_path / "dec2.csv").exists() and len(frappe.records) == 1
    pushed = cli("push", "X-2026-12-001", env=env)
    assert pushed.code == 0 and len(frappe.records) == 1
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit ORDER BY audit_id")]
    assert actions == ["intake.accepted", "notice.issued", "notice.served", "export.created", "export.written", "export.written", "export.pushed",
                       "export.nothing_new", "export.pushed"]


def test_cli_push_failure_exits_3(cli: Cli, write_json: Callable[..., Path], tmp_path: Path) -> None:
    env = {"SHOUMI_PAYROLL_LEDGER_PATH": str(tmp_path / "ledger.sqlite3"),
           "SHOUMI_PAYROLL_FRAPPE__URL": "http://127.0.0.1:9", "SHOUMI_PAYROLL_FRAPPE__API_KEY": "k",
           "SHOUMI_PAYROLL_FRAPPE__API_SECRET": "s", "SHOUMI_PAYROLL_FRAPPE__RETRIES": "1",
           "SHOUMI_PAYROLL_FRAPPE__BACKOFF_SECONDS": "0.01", "SHOUMI_PAYROLL_APPEAL_DAYS": "1"}
    cli("intake", str(write_json("case.json", case_doc())), env=env)
    cli("wages", str(write_json("w.json", wages_doc())), env=env)
    cli_notify(cli, env)
    assert cli("export", "--period", "2026-12", env=env).code == 0
    result = cli("push", "X-2026-12-001", env=env)
    assert result.code == 3 and "Run the push again" in result.stderr


def test_a_refund_is_pushed_as_an_earning_beside_the_deduction_and_never_twice(
    ledger: Ledger, frappe: FakeFrappe, tmp_path: Path
) -> None:
    from datetime import date

    export_id = _setup(ledger)
    employee, wages = parse_wages(json.dumps(wages_doc(periods=("2026-12",), wage_fen=300000, si=0, hf=0)))
    ledger.record_wages(employee_id=employee, wages=wages, actor="payroll")  # December was over the floor
    employee, wages = parse_wages(json.dumps(wages_doc(periods=("2027-01",))))
    ledger.record_wages(employee_id=employee, wages=wages, actor="payroll")
    notify(ledger, "C-7", issued=date(2027, 1, 2))
    january = ledger.export(period=Period(2027, 1), actor="zhao.hr")
    assert january.export_id and [r.amount_fen for r in january.refunds] == [100000 - 26000]
    settings = _settings(frappe, tmp_path)
    push_export(ledger, export_id=export_id, settings=settings, actor="a")
    result = push_export(ledger, export_id=january.export_id, settings=settings, actor="a")
    assert set(result.accepted) == {"shoumi:C-7:2027-01", "shoumi-refund:C-7:2027-01"}
    components = [(r["salary_component"], r["payroll_date"], r["amount"]) for r in frappe.records]
    assert components == [("Confidentiality Loss Recovery", "2026-12-01", "1000.00"),
                          ("Confidentiality Loss Recovery", "2027-01-01", "740.00"),
                          ("Confidentiality Loss Refund", "2027-01-01", "740.00")]
    push_export(ledger, export_id=january.export_id, settings=settings, actor="a")
    assert len(frappe.records) == 3
