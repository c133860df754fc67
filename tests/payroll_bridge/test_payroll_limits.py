"""Issue 14 items 4, 5, 10, 11: the schedule before confirmation, weakening overrides, other deductions
of the month, the regional lists of what the minimum-wage comparison leaves out (real CLI and ledger)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

from conftest import Cli, case_doc, issue_example
from payroll_bridge.ledger import Ledger
from payroll_bridge.period import Period
from payroll_bridge.services import parse_wages


def _periods(*names: str, wage_fen: int = 800000, **extra: Any) -> list[dict[str, Any]]:
    return [{"period": p, "wage_fen": wage_fen, "social_insurance_fen": 84000, "housing_fund_fen": 56000, **extra}
            for p in names]


# --- item 4 -----------------------------------------------------------------------------------------


def test_the_stateless_schedule_deducts_nothing_before_the_confirmation_month_as_the_ledger(
    cli: Cli, write_json: Callable[..., Path], ledger: Ledger
) -> None:
    doc = issue_example()
    doc["periods"] = _periods("2026-10", "2026-11", "2026-12")
    out = cli("schedule", str(write_json("in.json", doc)))
    assert out.code == 0, out.stderr
    lines = [(x["period"], x["deduction_fen"], x["binding"]) for x in out.json()["lines"]]
    assert lines == [("2026-10", 0, "BEFORE_CONFIRMATION"), ("2026-11", 160000, "CAP20"),
                     ("2026-12", 160000, "CAP20")]
    # the ledger, given the same case and wages, deducts the same in every month
    assert ledger.intake(payload=json.dumps(case_doc()), actor="zhao.hr").decision.accepted
    employee, wages = parse_wages(json.dumps({"employee_id": "E1001", "periods": doc["periods"]}))
    ledger.record_wages(employee_id=employee, wages=wages, actor="payroll")
    stored = {str(x.line.period): x.line.deduction_fen for x in ledger.lines()}
    assert {p: d for p, d, _ in lines if d} == stored


# --- item 5 -----------------------------------------------------------------------------------------


def _confirmed_table(write_json: Callable[..., Path]) -> Path:
    return write_json("customer-table.json", {"format": 1, "regions": {}, "rows": [
        {"region": "CN-SH", "tier": 1, "monthly_fen": 274000, "effective_from": "2025-07-01",
         "source": "沪人社规〔2025〕10号, read by the customer", "checked_on": "2026-11-30", "confirmed": True}]})


def test_an_override_below_the_confirmed_row_is_refused_unless_forced_then_warned_and_audited(
    cli: Cli, write_json: Callable[..., Path], tmp_path: Path
) -> None:
    doc = issue_example()
    doc["minimum_wage_fen"] = 200000
    table = _confirmed_table(write_json)
    ledger = tmp_path / "ledger.sqlite3"
    refused = cli("--table", str(table), "--ledger", str(ledger), "schedule", str(write_json("in.json", doc)))
    assert refused.code == 2 and refused.stdout == ""
    assert "OVERRIDE_BELOW_CONFIRMED_MINIMUM_WAGE" in refused.stderr and "--force-override" in refused.stderr
    assert not ledger.exists()
    forced = cli("--table", str(table), "--ledger", str(ledger), "schedule", "--force-override", "--actor", "zhao.hr",
                 str(write_json("in.json", doc)))
    assert forced.code == 0, forced.stderr
    codes = [w["code"] for w in forced.json()["warnings"]]
    assert codes == ["OVERRIDE_BELOW_CONFIRMED_MINIMUM_WAGE"]
    assert "warning: OVERRIDE_BELOW_CONFIRMED_MINIMUM_WAGE" in forced.stderr
    with sqlite3.connect(ledger) as conn:
        (actor, action, subject, detail), = conn.execute("SELECT actor, action, subject, detail FROM audit")
    assert (actor, action, subject) == ("zhao.hr", "schedule.override_forced", "E1001")
    assert json.loads(detail)["warnings"][0]["code"] == "OVERRIDE_BELOW_CONFIRMED_MINIMUM_WAGE"


def test_counting_contributions_the_confirmed_rule_excludes_is_refused_unless_forced(
    cli: Cli, write_json: Callable[..., Path]
) -> None:
    doc = issue_example()  # CN-SH: the bundled rule (confirmed) excludes both contributions
    doc["minimum_wage_excludes_contributions"] = False
    refused = cli("schedule", str(write_json("in.json", doc)))
    assert refused.code == 2 and "OVERRIDE_WEAKENS_CONFIRMED_EXCLUSIONS" in refused.stderr
    forced = cli("schedule", "--force-override", str(write_json("in.json", doc)))
    assert forced.code == 0 and [w["code"] for w in forced.json()["warnings"]] == [
        "OVERRIDE_WEAKENS_CONFIRMED_EXCLUSIONS"]


def test_an_override_below_an_unconfirmed_row_is_applied_with_a_warning(
    cli: Cli, write_json: Callable[..., Path]
) -> None:
    doc = issue_example()
    doc["minimum_wage_fen"] = 200000  # the bundled CN-SH row (274,000) is not confirmed
    out = cli("schedule", str(write_json("in.json", doc)))
    assert out.code == 0 and out.stderr == ""
    assert [w["code"] for w in out.json()["warnings"]] == ["OVERRIDE_BELOW_TABLE_MINIMUM_WAGE"]


def test_a_stricter_override_needs_no_force(cli: Cli, write_json: Callable[..., Path]) -> None:
    doc = issue_example()
    doc["minimum_wage_fen"] = 300000
    assert cli("--table", str(_confirmed_table(write_json)), "schedule", str(write_json("in.json", doc))).code == 0


# --- item 10 ----------------------------------------------------------------------------------------


def test_other_loss_deductions_of_the_month_share_the_cap_and_the_floor(
    cli: Cli, write_json: Callable[..., Path]
) -> None:
    doc = issue_example()
    doc["periods"] = _periods("2026-12", other_loss_deductions_fen=100000)
    line, = cli("schedule", str(write_json("in.json", doc))).json()["lines"]
    assert (line["deduction_fen"], line["binding"]) == (60000, "CAP20")  # 1,600 cap less 1,000 already taken
    doc["periods"] = _periods("2026-12", other_loss_deductions_fen=200000)
    line, = cli("schedule", str(write_json("in.json", doc))).json()["lines"]
    assert line["deduction_fen"] == 0


def test_disciplinary_deductions_share_the_floor_everywhere_and_the_cap_in_shenzhen(
    cli: Cli, write_json: Callable[..., Path]
) -> None:
    shanghai = issue_example()
    shanghai["periods"] = _periods("2026-12", disciplinary_deductions_fen=300000)
    line, = cli("schedule", str(write_json("sh.json", shanghai))).json()["lines"]
    # floor base 6,600 - minimum 2,740 = 3,860 headroom, 3,000 of it used by the disciplinary deduction
    assert (line["deduction_fen"], line["binding"]) == (86000, "FLOOR")
    shenzhen = issue_example()
    del shenzhen["minimum_wage_fen"], shenzhen["minimum_wage_excludes_contributions"]
    shenzhen["region"] = "CN-GD-SZ"
    shenzhen["periods"] = _periods("2026-12", disciplinary_deductions_fen=100000)
    out = cli("schedule", str(write_json("sz.json", shenzhen))).json()
    assert (out["lines"][0]["deduction_fen"], out["lines"][0]["binding"]) == (60000, "CAP20")
    assert out["periods"][0]["other_deductions_fen"] == {"floor": 100000, "cap": 100000}


def test_the_ledger_deducts_within_what_other_deductions_leave(ledger: Ledger) -> None:
    assert ledger.intake(payload=json.dumps(case_doc()), actor="zhao.hr").decision.accepted
    employee, wages = parse_wages(json.dumps({"employee_id": "E1001",
                                              "periods": _periods("2026-12", other_loss_deductions_fen=150000)}))
    ledger.record_wages(employee_id=employee, wages=wages, actor="payroll")
    assert [x.line.deduction_fen for x in ledger.lines()] == [10000]


# --- item 11 ----------------------------------------------------------------------------------------


def test_shanghai_leaves_out_meal_commuting_and_housing_allowances_and_says_so(
    cli: Cli, write_json: Callable[..., Path]
) -> None:
    doc = issue_example()
    doc["periods"] = _periods("2026-12", wage_fen=400000,
                              excluded_items={"meal_allowance": 30000, "housing_allowance": 20000})
    out = cli("schedule", str(write_json("in.json", doc))).json()
    # 4,000 - 840 - 560 - 300 - 200 = 2,100 < 2,740: nothing may go
    assert out["periods"][0]["floor_base_fen"] == 210000 and out["lines"][0]["binding"] == "FLOOR"
    names = {i["code"]: i["name"] for i in out["periods"][0]["excluded_items"]}
    assert names == {"housing_allowance": "住房补贴", "meal_allowance": "伙食补贴（饭贴）"}


def test_an_item_the_region_counts_as_wage_is_refused(cli: Cli, write_json: Callable[..., Path]) -> None:
    doc = issue_example()
    doc.update(region="CN-ZJ", minimum_wage_fen=266000, minimum_wage_excludes_contributions=False)
    doc["periods"] = _periods("2026-12", excluded_items={"meal_allowance": 30000})
    out = cli("schedule", str(write_json("in.json", doc)))
    assert out.code == 2 and "'meal_allowance' is not excluded" in out.stderr and "CN-ZJ" in out.stderr


def test_the_table_lists_each_regions_excluded_items_with_a_source(cli: Cli) -> None:
    regions = cli("table").json()["regions"]
    for code, region in regions.items():
        items = {i["code"]: i for i in region["excluded_items"]}
        assert {"overtime", "night_shift", "special_conditions", "statutory_welfare"} <= set(items), code
        assert all(i["source"] for i in items.values())
    assert {"meal_allowance", "commuting_allowance", "housing_allowance"} <= {
        i["code"] for i in regions["CN-SH"]["excluded_items"]}
    assert "other_not_counted" in {i["code"] for i in regions["CN-BJ"]["excluded_items"]}


def test_the_notice_names_what_was_excluded(ledger: Ledger) -> None:
    from datetime import date

    from payroll_bridge.notice import render_text
    from payroll_bridge.services import build_notice
    from payroll_bridge.settings import PayrollSettings

    assert ledger.intake(payload=json.dumps(case_doc()), actor="zhao.hr").decision.accepted
    employee, wages = parse_wages(json.dumps({"employee_id": "E1001", "periods": _periods(
        "2026-12", excluded_items={"meal_allowance": 30000}, excluded_items_fen=10000)}))
    ledger.record_wages(employee_id=employee, wages=wages, actor="payroll")
    text = render_text(build_notice(ledger, case_id="C-7", settings=PayrollSettings(), issued_on=date(2026, 11, 26)))
    assert "不计入最低工资比较：伙食补贴（饭贴） 300.00 元、加班工资、特殊条件津贴及法定福利（合计） 100.00 元" in text
    assert "个人缴纳的住房公积金" in text and "上下班交通费补贴" in text
    assert Period(2026, 12) in {w.period for w in ledger._wages("E1001")}
