"""The ``schedule`` contract: decode INPUT.json strictly, resolve the local terms, encode the output.

This is the adapter between the JSON documented in docs/payroll.md and the pure engine in
``rules``. It refuses anything the contract does not allow (``InvalidInput``), so the engine only
ever sees valid values. It reads no files and writes nothing: the caller hands it text and a table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Iterable

from payroll_bridge.errors import InvalidInput, TableError
from payroll_bridge.minimum_wage import STALE_AFTER_MONTHS, MinimumWageTable, RegionRule, WageRow
from payroll_bridge.period import Period
from payroll_bridge.rules import (
    Case,
    CapBase,
    claim_deadline,
    other_deductions_fen,
    PeriodTerms,
    PeriodWage,
    Schedule,
    floor_base_fen,
    schedule,
)

__all__ = [
    "ScheduleRequest",
    "parse_period_wage",
    "check_excluded_items",
    "override_findings",
    "excluded_items_json",
    "ResolvedPeriod",
    "Warning_",
    "decode_json",
    "json_default",
    "has_fraction",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "parse_request",
    "resolve_terms",
    "run_schedule",
    "expect_fen",
    "expect_object",
    "expect_text",
]


@dataclass(frozen=True)
class ScheduleRequest:
    """A valid INPUT.json as values."""

    employee_id: str
    region: str
    cases: tuple[Case, ...]
    periods: tuple[PeriodWage, ...]
    minimum_wage_fen: int | None = None
    excludes_contributions: bool | None = None
    employment_ends: Period | None = None
    tier: int | None = None


@dataclass(frozen=True)
class ResolvedPeriod:
    """The terms used for one period and where they came from."""

    wage: PeriodWage
    terms: PeriodTerms
    row: WageRow | None  # the row used (None under a minimum_wage_fen override)
    region: RegionRule | None
    table_row: WageRow | None = None  # the table's row in force, used or not


@dataclass(frozen=True)
class Warning_:
    """Something HR must look at; never a reason to refuse."""

    code: str
    message: str
    periods: tuple[Period, ...] = ()
    case_id: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.periods:
            out["periods"] = [str(p) for p in self.periods]
        if self.case_id is not None:
            out["case_id"] = self.case_id
        return out


# Bounds on what any JSON input may be: deep nesting would exhaust the parser's recursion and a
# huge integer its int() conversion; no amount of fen needs more than 16 digits (10^14 yuan).
MAX_DEPTH = 32
MAX_INT_DIGITS = 16


class _Fraction:
    """Marks a JSON number with a fraction or exponent, so that it can be refused by name."""

    def __init__(self, text: str) -> None:
        self.text = text[:40]

    def __repr__(self) -> str:
        return self.text


def json_default(value: object) -> object:
    """``json.dumps`` default: a fractional number is written back as its text."""
    if isinstance(value, _Fraction):
        return value.text
    raise TypeError(f"not JSON: {type(value).__name__}")


def has_fraction(doc: Any) -> bool:
    """Whether a decoded document holds a fractional number anywhere."""
    if isinstance(doc, _Fraction):
        return True
    if isinstance(doc, dict):
        return any(has_fraction(v) for v in doc.values())
    if isinstance(doc, list):
        return any(has_fraction(v) for v in doc)
    return False


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidInput(f"a number has more than {MAX_INT_DIGITS} digits ({text[:20]}…)")
    return int(text)


def _check_depth(text: str) -> None:
    """Refuses nesting deeper than MAX_DEPTH before the recursive parser sees it."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidInput(f"not accepted: JSON nested more than {MAX_DEPTH} levels deep")
        elif ch in "]}":
            depth -= 1


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidInput(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise InvalidInput(f"{name} is not a number of fen")


def decode_json(text: str | bytes) -> Any:
    """Parses JSON keeping fractional numbers recognisable and refusing duplicate keys, NaN, deep
    nesting and over-long integers."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        _check_depth(text)
        return json.loads(
            text,
            parse_float=_Fraction,
            parse_int=_bounded_int,
            parse_constant=_no_constants,
            object_pairs_hook=_no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput("not valid JSON: the text is not UTF-8") from exc


def expect_fen(value: Any, where: str, *, positive: bool = False) -> int:
    """An amount in fen: a JSON integer, not negative (nor zero when ``positive``)."""
    if isinstance(value, _Fraction) or isinstance(value, (float, Decimal)):
        raise InvalidInput(f"{where} must be a whole number of fen, got the fractional {value!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{where} must be an integer number of fen, got {value!r}")
    if value < 0:
        raise InvalidInput(f"{where} must not be negative, got {value}")
    if positive and value == 0:
        raise InvalidInput(f"{where} must be more than zero")
    return value


def expect_object(value: Any, where: str, allowed: Iterable[str], required: Iterable[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise InvalidInput(f"{where} has unknown field(s) {', '.join(unknown)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise InvalidInput(f"{where} is missing {', '.join(missing)}")
    return value


def expect_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where} must be a non-empty string")
    return value


def _period(value: Any, where: str) -> Period:
    try:
        return Period.parse(value)
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from exc


def _date(value: Any, where: str) -> date:
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be an ISO date 'YYYY-MM-DD'")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"{where} must be an ISO date 'YYYY-MM-DD', got {value!r}") from exc


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{where} must be true or false, got {value!r}")
    return value


_TOP = ("employee_id", "region", "cases", "periods", "minimum_wage_fen",
        "minimum_wage_excludes_contributions", "employment_ends", "minimum_wage_tier")
_CASE = ("case_id", "confirmed_at", "loss_fen", "paused")
_AMOUNTS = ("wage_fen", "excluded_items_fen", "social_insurance_fen", "housing_fund_fen",
            "other_loss_deductions_fen", "disciplinary_deductions_fen")
_PERIOD = ("period", *_AMOUNTS, "excluded_items")


def parse_period_wage(raw: Any, where: str) -> PeriodWage:
    """One period's wage object (schedule and wages share it); item codes are checked per region later."""
    p = expect_object(raw, where, _PERIOD, ("period", "wage_fen"))
    period = _period(p["period"], f"{where}.period")
    amounts = {name: expect_fen(p.get(name, 0), f"{where}.{name} ({period})") for name in _AMOUNTS}
    items: list[tuple[str, int]] = []
    raw_items = p.get("excluded_items", {})
    if not isinstance(raw_items, dict):
        raise InvalidInput(f"{where}.excluded_items must be an object of item code -> fen")
    for code, fen in sorted(raw_items.items()):
        items.append((code, expect_fen(fen, f"{where}.excluded_items.{code} ({period})")))
    # The items are excluded on top of excluded_items_fen (the national items given as one total).
    amounts["excluded_items_fen"] += sum(fen for _, fen in items)
    return PeriodWage(period, **amounts, excluded_items=tuple(items))


def check_excluded_items(wage: PeriodWage, region: RegionRule | None) -> None:
    """Refuses an itemized exclusion the region's list does not name (it counts as wage there)."""
    for code, _ in wage.excluded_items:
        if region is None or region.excluded_item(code) is None:
            known = ", ".join(i.code for i in region.excluded_items) if region else "none without a table region"
            raise InvalidInput(
                f"{wage.period}: {code!r} is not excluded from the minimum-wage comparison in "
                f"{region.code if region else 'this region'} (excluded there: {known})")


def parse_request(doc: Any) -> ScheduleRequest:
    """Validates a decoded INPUT.json; the first problem found is raised as ``InvalidInput``."""
    top = expect_object(doc, "the input", _TOP, ("employee_id", "region", "cases", "periods"))
    employee_id = expect_text(top["employee_id"], "employee_id")
    region = expect_text(top["region"], "region")
    if not isinstance(top["cases"], list) or not top["cases"]:
        raise InvalidInput("cases must be a non-empty list")
    if not isinstance(top["periods"], list) or not top["periods"]:
        raise InvalidInput("periods must be a non-empty list")

    cases: list[Case] = []
    ids: set[str] = set()
    for i, raw in enumerate(top["cases"]):
        where = f"cases[{i}]"
        c = expect_object(raw, where, _CASE, ("case_id", "confirmed_at"))
        case_id = expect_text(c["case_id"], f"{where}.case_id")
        if case_id in ids:
            raise InvalidInput(f"{where}.case_id {case_id!r} is used twice")
        ids.add(case_id)
        if "loss_fen" not in c or c["loss_fen"] is None:
            raise InvalidInput(f"{where} (case {case_id}) has no loss_fen")
        loss = expect_fen(c["loss_fen"], f"{where}.loss_fen (case {case_id})", positive=True)
        paused = _bool(c.get("paused", False), f"{where}.paused")
        cases.append(Case(case_id, _date(c["confirmed_at"], f"{where}.confirmed_at"), loss, paused))

    periods: list[PeriodWage] = []
    seen: set[Period] = set()
    for i, raw in enumerate(top["periods"]):
        where = f"periods[{i}]"
        wage = parse_period_wage(raw, where)
        if wage.period in seen:
            raise InvalidInput(f"{where}.period {wage.period} is listed twice")
        seen.add(wage.period)
        periods.append(wage)

    minimum = None
    if top.get("minimum_wage_fen") is not None:
        minimum = expect_fen(top["minimum_wage_fen"], "minimum_wage_fen", positive=True)
    excludes = None
    if top.get("minimum_wage_excludes_contributions") is not None:
        excludes = _bool(top["minimum_wage_excludes_contributions"], "minimum_wage_excludes_contributions")
    ends = None
    if top.get("employment_ends") is not None:
        ends = _period(top["employment_ends"], "employment_ends")
    tier = None
    if top.get("minimum_wage_tier") is not None:
        tier = expect_fen(top["minimum_wage_tier"], "minimum_wage_tier", positive=True)
    return ScheduleRequest(employee_id, region, tuple(cases), tuple(periods), minimum, excludes, ends, tier)


def resolve_terms(request: ScheduleRequest, table: MinimumWageTable) -> tuple[ResolvedPeriod, ...]:
    """The minimum wage and exclusions in force for each period, from overrides or the table."""
    region = table.region(request.region)
    if region is None and (request.minimum_wage_fen is None or request.excludes_contributions is None):
        known = ", ".join(sorted(table.regions))
        raise InvalidInput(
            f"unknown region {request.region!r}: use one of {known}, or give both "
            "minimum_wage_fen and minimum_wage_excludes_contributions"
        )
    tier = request.tier or (region.default_tier if region else 1)
    resolved = []
    for wage in sorted(request.periods, key=lambda w: w.period):
        check_excluded_items(wage, region)
        # The table's row is looked up even under an override, so that an override can be compared.
        row = table.row_in_force(region.code, tier, wage.period) if region is not None else None
        if request.minimum_wage_fen is not None:
            minimum = request.minimum_wage_fen
        else:
            assert region is not None
            if row is None:
                raise InvalidInput(
                    f"the minimum-wage table ({table.origin}) has no row for {region.code} tier {tier} "
                    f"in force in {wage.period}: add one to the customer table or give minimum_wage_fen"
                )
            minimum = row.monthly_fen
        if request.excludes_contributions is not None:
            ex_si = ex_hf = request.excludes_contributions
        else:
            assert region is not None
            ex_si, ex_hf = region.excludes_social_insurance, region.excludes_housing_fund
        terms = PeriodTerms(
            minimum_wage_fen=minimum,
            excludes_social_insurance=ex_si,
            excludes_housing_fund=ex_hf,
            cap_percent=region.cap_percent if region else 20,
            cap_base=region.cap_base if region else CapBase.WAGE,
            disciplinary_shares_cap=region.disciplinary_shares_limits if region else False,
        )
        used = row if request.minimum_wage_fen is None else None
        resolved.append(ResolvedPeriod(wage, terms, used, region, row))
    return tuple(resolved)


def override_findings(request: ScheduleRequest, resolved: Iterable[ResolvedPeriod]) -> tuple[list[Warning_], list[Warning_]]:
    """Overrides weaker than the table: (those that need --force-override, those that only warn).

    An override below a *confirmed* row, or one that counts the contributions where the region's
    *confirmed* rule excludes them, weakens the law and is refused without the force flag; below an
    unconfirmed row it is only a warning.
    """
    forced: dict[str, list[Period]] = {}
    warned: dict[str, list[Period]] = {}
    texts: dict[str, str] = {}
    for rp in resolved:
        row = rp.table_row
        if request.minimum_wage_fen is not None and row is not None and row.monthly_fen > request.minimum_wage_fen:
            code = "OVERRIDE_BELOW_CONFIRMED_MINIMUM_WAGE" if row.confirmed else "OVERRIDE_BELOW_TABLE_MINIMUM_WAGE"
            (forced if row.confirmed else warned).setdefault(code, []).append(rp.wage.period)
            texts[code] = (f"minimum_wage_fen {request.minimum_wage_fen} is below the "
                           f"{'confirmed' if row.confirmed else 'unconfirmed'} table row for {row.region} "
                           f"({row.monthly_fen} fen from {row.effective_from}, {row.source})")
        region = rp.region
        if request.excludes_contributions is False and region is not None and region.flags_confirmed \
                and (region.excludes_social_insurance or region.excludes_housing_fund):
            code = "OVERRIDE_WEAKENS_CONFIRMED_EXCLUSIONS"
            forced.setdefault(code, []).append(rp.wage.period)
            texts[code] = (f"minimum_wage_excludes_contributions false counts contributions that {region.code}'s "
                           f"confirmed rule excludes from the minimum wage ({region.flags_source})")
    return ([Warning_(c, texts[c], tuple(ps)) for c, ps in forced.items()],
            [Warning_(c, texts[c], tuple(ps)) for c, ps in warned.items()])


def table_warnings(
    resolved: Iterable[ResolvedPeriod], *, request_overrides_flags: bool, stale_after_months: int = STALE_AFTER_MONTHS
) -> list[Warning_]:
    """Stale and unconfirmed rows, unconfirmed regional flags, notice requirements."""
    warnings: list[Warning_] = []
    stale: dict[WageRow, list[Period]] = {}
    unconfirmed: dict[WageRow, list[Period]] = {}
    region: RegionRule | None = None
    for rp in resolved:
        region = rp.region or region
        if rp.row is None:
            continue
        if rp.row.months_unchecked(rp.wage.period) > stale_after_months:
            stale.setdefault(rp.row, []).append(rp.wage.period)
        if not rp.row.confirmed:
            unconfirmed.setdefault(rp.row, []).append(rp.wage.period)
    for row, periods in stale.items():
        warnings.append(Warning_(
            "STALE_MINIMUM_WAGE",
            f"the minimum wage for {row.region} tier {row.tier} ({row.monthly_fen} fen from "
            f"{row.effective_from}) was last checked on {row.checked_on}, more than {stale_after_months} "
            "months before these periods: check it against the source and update the table",
            tuple(periods),
        ))
    for row, periods in unconfirmed.items():
        warnings.append(Warning_(
            "UNCONFIRMED_MINIMUM_WAGE",
            f"the minimum wage for {row.region} tier {row.tier} ({row.monthly_fen} fen from "
            f"{row.effective_from}) is not confirmed against the official text ({row.source})",
            tuple(periods),
        ))
    if region is not None and not region.flags_confirmed and not request_overrides_flags:
        warnings.append(Warning_(
            "UNCONFIRMED_REGION_RULE",
            f"whether {region.code}'s minimum wage excludes the individual's social insurance and "
            f"housing fund is not confirmed ({region.flags_source})",
        ))
    if region is not None and region.requires_written_notice:
        warnings.append(Warning_(
            "WRITTEN_NOTICE_REQUIRED",
            f"{region.code} requires written notice of the reason and amount before any deduction (the ledger "
            "requires a served notice stating each month's amount in every region)",
        ))
    return warnings


def excluded_items_json(wage: PeriodWage, region: RegionRule | None) -> list[dict[str, object]]:
    """What was left out of the minimum-wage comparison, item by item, with each item's source."""
    out: list[dict[str, object]] = []
    for code, fen in wage.excluded_items:
        item = region.excluded_item(code) if region else None
        out.append({"code": code, "name": item.name if item else code, "amount_fen": fen,
                    "source": item.source if item else ""})
    rest = wage.excluded_items_fen - sum(fen for _, fen in wage.excluded_items)
    if rest:
        out.append({"code": "national", "name": "加班工资、特殊条件津贴及法定福利（合计）", "amount_fen": rest,
                    "source": "《最低工资规定》第十二条"})
    return out


def schedule_warnings(request: ScheduleRequest, result: Schedule) -> list[Warning_]:
    """Paused cases and balances left when employment ends."""
    warnings: list[Warning_] = []
    for case in request.cases:
        if case.paused:
            warnings.append(Warning_(
                "CASE_PAUSED",
                f"case {case.case_id} is paused (appeal or arbitration): nothing is deducted until it "
                "resumes with the award's amount",
                case_id=case.case_id,
            ))
    last = max(w.period for w in request.periods)
    if request.employment_ends is not None and last >= request.employment_ends:
        for case_id, left in result.remaining_fen.items():
            if left > 0:
                warnings.append(Warning_(
                    "BALANCE_AT_END_OF_EMPLOYMENT",
                    f"case {case_id} still has {left} fen open after employment ends in "
                    f"{request.employment_ends}: it is never taken from the final pay or severance; "
                    "settle it, or claim it through arbitration by "
                    f"{claim_deadline(request.employment_ends).isoformat()} (one year from the end of "
                    "employment, 《劳动争议调解仲裁法》第二十七条)",
                    case_id=case_id,
                ))
    return warnings


def run_schedule(
    request: ScheduleRequest, table: MinimumWageTable, stale_after_months: int = STALE_AFTER_MONTHS,
    *, force_override: bool = False,
) -> dict[str, object]:
    """Computes the schedule and encodes the contract's output document.

    An override weaker than the confirmed table is refused (``InvalidInput``) unless
    ``force_override``; then it is applied and its warning is in the output.
    """
    try:
        resolved = resolve_terms(request, table)
    except TableError as exc:
        raise InvalidInput(str(exc)) from exc
    forced, weaker = override_findings(request, resolved)
    if forced and not force_override:
        raise InvalidInput("; ".join(f"{w.code}: {w.message}" for w in forced)
                           + " (refused: give --force-override to apply it anyway, recorded in the audit)")
    result = schedule(
        cases=request.cases,
        periods=[(rp.wage, rp.terms) for rp in resolved],
        employment_ends=request.employment_ends,
    )
    warnings = table_warnings(
        resolved, request_overrides_flags=request.excludes_contributions is not None,
        stale_after_months=stale_after_months,
    ) + schedule_warnings(request, result) + forced + weaker
    return {
        "employee_id": request.employee_id,
        "lines": [line.to_json() for line in result.lines],
        "remaining_fen": dict(result.remaining_fen),
        "warnings": [w.to_json() for w in warnings],
        "periods": [
            {
                "period": str(rp.wage.period),
                "minimum_wage_fen": rp.terms.minimum_wage_fen,
                "floor_base_fen": floor_base_fen(rp.wage, rp.terms),
                "excludes_social_insurance": rp.terms.excludes_social_insurance,
                "excludes_housing_fund": rp.terms.excludes_housing_fund,
                "cap_percent": rp.terms.cap_percent,
                "source": rp.row.source if rp.row else "minimum_wage_fen given in the input",
                "other_deductions_fen": dict(zip(("floor", "cap"), other_deductions_fen(rp.wage, rp.terms))),
                "excluded_items": excluded_items_json(rp.wage, rp.region),
            }
            for rp in resolved
        ],
    }
