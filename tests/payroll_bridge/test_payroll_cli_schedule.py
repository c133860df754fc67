"""`shoumi-payroll schedule INPUT.json`: the stable contract, run as a real subprocess."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import Cli, issue_example


def test_issue_example_gives_the_documented_output(cli: Cli, write_json: Callable[..., Path], example: dict) -> None:
    result = cli("schedule", str(write_json("input.json", example)))
    assert result.code == 0, result.stderr
    out = result.json()
    assert out["employee_id"] == "E1001"
    assert out["lines"] == [{"period": "2026-12", "case_id": "C-7", "deduction_fen": 160000, "cap_fen": 160000,
                             "headroom_fen": 386000, "binding": "CAP20", "balance_after_fen": 340000}]
    assert out["remaining_fen"] == {"C-7": 340000}
    assert out["warnings"] == []
    assert result.stderr == ""


def test_reads_stdin_with_dash(cli: Cli, example: dict) -> None:
    result = cli("schedule", "-", stdin=json.dumps(example))
    assert result.code == 0 and result.json()["remaining_fen"] == {"C-7": 340000}


def test_table_is_used_without_overrides(cli: Cli, write_json: Callable[..., Path], example: dict) -> None:
    del example["minimum_wage_fen"], example["minimum_wage_excludes_contributions"]
    example["periods"].append({"period": "2025-06", "wage_fen": 300000, "social_insurance_fen": 20000})
    example["cases"][0]["confirmed_at"] = "2025-05-20"
    out = cli("schedule", str(write_json("in.json", example))).json()
    minimums = {p["period"]: p["minimum_wage_fen"] for p in out["periods"]}
    assert minimums == {"2025-06": 269000, "2026-12": 274000}  # effective-dated rows
    assert [line["period"] for line in out["lines"]] == ["2025-06", "2026-12"]
    # 2025-06: 3,000 - 200 contributions = 2,800 vs 2,690: headroom 110 yuan, below the 600 cap
    assert out["lines"][0]["headroom_fen"] == 11000 and out["lines"][0]["binding"] == "FLOOR"
    assert any(w["code"] == "UNCONFIRMED_MINIMUM_WAGE" and w["periods"] == ["2025-06"] for w in out["warnings"])


def test_shenzhen_counts_contributions_and_warns_about_written_notice(
    cli: Cli, write_json: Callable[..., Path], example: dict
) -> None:
    example.update(region="CN-GD-SZ")
    del example["minimum_wage_fen"], example["minimum_wage_excludes_contributions"]
    example["periods"][0].update(wage_fen=300000)
    out = cli("schedule", str(write_json("in.json", example))).json()
    assert out["lines"][0]["headroom_fen"] == 300000 - 252000
    codes = {w["code"] for w in out["warnings"]}
    assert {"WRITTEN_NOTICE_REQUIRED", "UNCONFIRMED_REGION_RULE"} <= codes


def test_end_of_employment_reports_the_balance(cli: Cli, write_json: Callable[..., Path], example: dict) -> None:
    example["employment_ends"] = "2027-01"
    example["periods"] = [dict(example["periods"][0], period=p) for p in ("2027-02", "2026-12", "2027-01")]
    out = cli("schedule", str(write_json("in.json", example))).json()
    assert [(x["period"], x["deduction_fen"], x["binding"]) for x in out["lines"]] == [
        ("2026-12", 160000, "CAP20"), ("2027-01", 160000, "CAP20"), ("2027-02", 0, "ENDED")]
    assert out["remaining_fen"] == {"C-7": 180000}
    (warning,) = [w for w in out["warnings"] if w["code"] == "BALANCE_AT_END_OF_EMPLOYMENT"]
    assert warning["case_id"] == "C-7" and "final pay" in warning["message"]


def _broken(mutate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    doc = copy.deepcopy(issue_example())
    mutate(doc)
    return doc


INVALID = {
    "negative loss": (_broken(lambda d: d["cases"][0].update(loss_fen=-5)), "must not be negative"),
    "fractional wage": (_broken(lambda d: d["periods"][0].update(wage_fen=800000.5)), "whole number of fen"),
    "float-looking integer": (_broken(lambda d: d["periods"][0].update(wage_fen=800000.0)), "whole number of fen"),
    "string amount": (_broken(lambda d: d["periods"][0].update(social_insurance_fen="84000")), "integer number of fen"),
    "boolean amount": (_broken(lambda d: d["cases"][0].update(loss_fen=True)), "integer number of fen"),
    "unknown region without overrides": (
        _broken(lambda d: (d.update(region="CN-XX"), d.pop("minimum_wage_fen"))), "unknown region 'CN-XX'"),
    "unknown region with one override": (
        _broken(lambda d: (d.update(region="CN-XX"), d.pop("minimum_wage_excludes_contributions"))),
        "unknown region"),
    "period twice": (_broken(lambda d: d["periods"].append(dict(d["periods"][0]))), "listed twice"),
    "malformed period": (_broken(lambda d: d["periods"][0].update(period="2026-13")), "not a pay period"),
    "period as a date": (_broken(lambda d: d["periods"][0].update(period="2026-12-01")), "expected 'YYYY-MM'"),
    "case without loss": (_broken(lambda d: d["cases"][0].pop("loss_fen")), "has no loss_fen"),
    "case with zero loss": (_broken(lambda d: d["cases"][0].update(loss_fen=0)), "more than zero"),
    "zero minimum wage": (_broken(lambda d: d.update(minimum_wage_fen=0)), "minimum_wage_fen must be more than zero"),
    "case id twice": (_broken(lambda d: d["cases"].append(dict(d["cases"][0]))), "used twice"),
    "unknown field": (_broken(lambda d: d["periods"][0].update(wage=1)), "unknown field(s) wage"),
    "missing periods": (_broken(lambda d: d.pop("periods")), "missing periods"),
    "bad confirmation date": (_broken(lambda d: d["cases"][0].update(confirmed_at="20.11.2026")), "ISO date"),
    "bad employment end": (_broken(lambda d: d.update(employment_ends="March")), "employment_ends"),
    "no row in force": (
        _broken(lambda d: (d.pop("minimum_wage_fen"), d["periods"][0].update(period="2019-01"))), "has no row"),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_input_exits_2_with_a_clear_error_and_writes_nothing(
    name: str, cli: Cli, write_json: Callable[..., Path], tmp_path: Path
) -> None:
    doc, message = INVALID[name]
    path = write_json("bad.json", doc)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("schedule", str(path))
    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("shoumi-payroll: error: ") and message in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"employee_id": "a", "employee_id": "b"}', "appears twice"),
    ('{"employee_id": "E", "region": "CN-SH", "cases": [], "periods": []}', "non-empty list"),
    ('{"minimum_wage_fen": NaN}', "not a number of fen"),
])
def test_unparseable_input_exits_2(cli: Cli, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    result = cli("schedule", str(path))
    assert result.code == 2 and result.stdout == "" and message in result.stderr, result.stderr


def test_missing_file_exits_2(cli: Cli) -> None:
    result = cli("schedule", "nowhere.json")
    assert result.code == 2 and result.stdout == "" and "cannot read nowhere.json" in result.stderr


def test_unknown_region_with_both_overrides_is_computed(cli: Cli, write_json: Callable[..., Path], example: dict) -> None:
    example["region"] = "CN-YN"
    out = cli("schedule", str(write_json("in.json", example))).json()
    assert out["lines"][0]["deduction_fen"] == 160000 and out["warnings"] == []


def test_customer_table_overrides_without_code_change_and_stale_rows_warn(
    cli: Cli, write_json: Callable[..., Path], example: dict
) -> None:
    del example["minimum_wage_fen"], example["minimum_wage_excludes_contributions"]
    example["periods"] = [dict(example["periods"][0], period=p) for p in ("2026-12", "2027-07", "2027-08")]
    table = {
        "format": 1,
        "regions": {},
        "rows": [{"region": "CN-SH", "tier": 1, "monthly_fen": 300000, "effective_from": "2026-01-01",
                  "source": "customer's own check of the 2026 notice", "checked_on": "2026-01-05",
                  "confirmed": True}],
    }
    path = write_json("customer-table.json", table)
    out = cli("schedule", str(write_json("in.json", example)),
              env={"SHOUMI_PAYROLL_MINIMUM_WAGE_TABLE": str(path)}).json()
    assert {p["minimum_wage_fen"] for p in out["periods"]} == {300000}
    assert out["lines"][0]["headroom_fen"] == 660000 - 300000
    (stale,) = [w for w in out["warnings"] if w["code"] == "STALE_MINIMUM_WAGE"]
    assert stale["periods"] == ["2027-08"]  # checked 2026-01: 2027-07 is 18 months later, 2027-08 is 19
    same = cli("--table", str(path), "schedule", str(write_json("in.json", example))).json()
    assert same == out


def test_broken_customer_table_exits_2(cli: Cli, write_json: Callable[..., Path], example: dict) -> None:
    path = write_json("customer-table.json", {"format": 1, "rows": [{"region": "CN-SH", "monthly_fen": -1}]})
    result = cli("--table", str(path), "schedule", str(write_json("in.json", example)))
    assert result.code == 2 and result.stdout == "" and "row 1" in result.stderr


def test_table_command_lists_sources_and_check_dates(cli: Cli) -> None:
    out = cli("table").json()
    assert out["regions"]["CN-SH"]["excludes_social_insurance"] is True
    assert out["regions"]["CN-GD-SZ"]["requires_written_notice"] is True
    for row in out["rows"]:
        assert row["source"] and row["checked_on"] and isinstance(row["confirmed"], bool)
