"""The effective-dated minimum-wage table: bundled data, a customer's override, and look-ups.

The bundled rows live in ``minimum_wage.json`` beside this module. A customer updates or overrides
them without a code change by pointing ``SHOUMI_PAYROLL_MINIMUM_WAGE_TABLE`` (or ``--table``) at a
file of the same format: each region named there replaces the bundled region's flags, and if the
file has rows for a region they replace all the bundled rows of that region. Regions the file does
not name keep the bundled data.

A row is in force for a period when it is the latest row of the region and tier whose
``effective_from`` is on or before the period's last day (a raise during the month counts for that
month: the reading that favours the employee).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Mapping

from payroll_bridge.errors import TableError
from payroll_bridge.period import Period
from payroll_bridge.rules import CapBase

__all__ = [
    "ExcludedItem",
    "NATIONAL_EXCLUDED_ITEMS",
    "RegionRule",
    "WageRow",
    "MinimumWageTable",
    "load_table",
    "parse_table",
    "STALE_AFTER_MONTHS",
]

STALE_AFTER_MONTHS = 18


@dataclass(frozen=True)
class ExcludedItem:
    """A pay item left out of the minimum-wage comparison, and the text that says so."""

    code: str
    name: str
    source: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "name": self.name, "source": self.source}


_NATIONAL = "《最低工资规定》（劳社部令第21号）第十二条"
# Excluded everywhere (第十二条); a region's list adds to these, never removes one.
NATIONAL_EXCLUDED_ITEMS: tuple[ExcludedItem, ...] = (
    ExcludedItem("overtime", "延长工作时间工资（加班工资）", _NATIONAL),
    ExcludedItem("night_shift", "中班、夜班津贴", _NATIONAL),
    ExcludedItem("special_conditions", "高温、低温、井下、有毒有害等特殊工作环境、条件下的津贴", _NATIONAL),
    ExcludedItem("statutory_welfare", "法律、法规和国家规定的劳动者福利待遇", _NATIONAL),
)


@dataclass(frozen=True)
class RegionRule:
    """What a region's rules say besides the amount: exclusions, notice, cap, kinds of loss."""

    code: str
    name: str
    excludes_social_insurance: bool
    excludes_housing_fund: bool
    requires_written_notice: bool
    cap_percent: int
    cap_base: CapBase
    default_tier: int
    flags_source: str
    flags_checked_on: date
    flags_confirmed: bool
    direct_loss_only: bool = False
    disciplinary_shares_limits: bool = False
    excluded_items: tuple[ExcludedItem, ...] = NATIONAL_EXCLUDED_ITEMS

    def excluded_item(self, code: str) -> ExcludedItem | None:
        """The region's excluded item with this code, or None when the region counts it as wage."""
        return next((i for i in self.excluded_items if i.code == code), None)


@dataclass(frozen=True)
class WageRow:
    """One monthly minimum wage: region, tier, amount, from when, and how we know."""

    region: str
    tier: int
    monthly_fen: int
    effective_from: date
    source: str
    checked_on: date
    confirmed: bool
    note: str = ""

    def months_unchecked(self, period: Period) -> int:
        """How many months lie between the last check and the period."""
        return period.index() - Period.of(self.checked_on).index()

    def to_json(self) -> dict[str, object]:
        return {
            "region": self.region,
            "tier": self.tier,
            "monthly_fen": self.monthly_fen,
            "effective_from": self.effective_from.isoformat(),
            "source": self.source,
            "checked_on": self.checked_on.isoformat(),
            "confirmed": self.confirmed,
            "note": self.note,
        }


@dataclass(frozen=True)
class MinimumWageTable:
    """All regions and rows; look-ups only, never mutated."""

    regions: Mapping[str, RegionRule]
    rows: tuple[WageRow, ...]
    origin: str = "bundled"

    def region(self, code: str) -> RegionRule | None:
        """The region's rule, or None when the table does not know the code."""
        return self.regions.get(code)

    def row_in_force(self, region: str, tier: int, period: Period) -> WageRow | None:
        """The row in force on the period's last day, or None."""
        candidates = [
            r for r in self.rows
            if r.region == region and r.tier == tier and r.effective_from <= period.last_day
        ]
        return max(candidates, key=lambda r: r.effective_from, default=None)

    def merged_with(self, override: MinimumWageTable) -> MinimumWageTable:
        """This table with the override's regions and rows replacing ours, region by region."""
        regions = {**self.regions, **override.regions}
        overridden_rows = {r.region for r in override.rows}
        rows = tuple(r for r in self.rows if r.region not in overridden_rows) + override.rows
        return MinimumWageTable(regions, rows, origin=f"bundled+{override.origin}")


def _date(value: Any, where: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise TableError(f"{where}: expected an ISO date, got {value!r}") from exc


def _int(value: Any, where: str, *, positive: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (positive and value <= 0):
        raise TableError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise TableError(f"{where}: expected true or false, got {value!r}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TableError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def parse_table(doc: Any, *, origin: str) -> MinimumWageTable:
    """Validates a decoded table document; every problem names the region or row."""
    if not isinstance(doc, dict) or doc.get("format") != 1:
        raise TableError(f"{origin}: not a minimum-wage table (expected an object with \"format\": 1)")
    regions: dict[str, RegionRule] = {}
    for code, spec in (doc.get("regions") or {}).items():
        where = f"{origin}: region {code}"
        if not isinstance(spec, dict):
            raise TableError(f"{where}: expected an object")
        try:
            cap_base = CapBase(spec.get("cap_base", "wage"))
        except ValueError as exc:
            raise TableError(f"{where}: cap_base must be 'wage' or 'wage_less_contributions'") from exc
        cap_percent = _int(spec.get("cap_percent", 20), f"{where}.cap_percent")
        if cap_percent > 20:
            raise TableError(f"{where}: cap_percent may not exceed the national 20%")
        items = list(NATIONAL_EXCLUDED_ITEMS)
        raw_items = spec.get("excluded_items", [])
        if not isinstance(raw_items, list):
            raise TableError(f"{where}.excluded_items: expected a list")
        for j, item in enumerate(raw_items):
            iw = f"{where}.excluded_items[{j}]"
            if not isinstance(item, dict):
                raise TableError(f"{iw}: expected an object")
            extra = ExcludedItem(_str(item.get("code"), f"{iw}.code"), _str(item.get("name"), f"{iw}.name"),
                                 _str(item.get("source"), f"{iw}.source"))
            if any(i.code == extra.code for i in items):
                raise TableError(f"{iw}: the item {extra.code} is listed twice")
            items.append(extra)
        regions[code] = RegionRule(
            code=code,
            name=_str(spec.get("name"), f"{where}.name"),
            excludes_social_insurance=_bool(spec.get("excludes_social_insurance"), f"{where}.excludes_social_insurance"),
            excludes_housing_fund=_bool(spec.get("excludes_housing_fund"), f"{where}.excludes_housing_fund"),
            requires_written_notice=_bool(spec.get("requires_written_notice", False), f"{where}.requires_written_notice"),
            cap_percent=cap_percent,
            cap_base=cap_base,
            default_tier=_int(spec.get("default_tier", 1), f"{where}.default_tier"),
            flags_source=_str(spec.get("flags_source"), f"{where}.flags_source"),
            flags_checked_on=_date(spec.get("flags_checked_on"), f"{where}.flags_checked_on"),
            flags_confirmed=_bool(spec.get("flags_confirmed", False), f"{where}.flags_confirmed"),
            direct_loss_only=_bool(spec.get("direct_loss_only", False), f"{where}.direct_loss_only"),
            disciplinary_shares_limits=_bool(spec.get("disciplinary_shares_limits", False),
                                             f"{where}.disciplinary_shares_limits"),
            excluded_items=tuple(items),
        )
    rows: list[WageRow] = []
    seen: set[tuple[str, int, date]] = set()
    for i, spec in enumerate(doc.get("rows") or []):
        where = f"{origin}: row {i + 1}"
        if not isinstance(spec, dict):
            raise TableError(f"{where}: expected an object")
        row = WageRow(
            region=_str(spec.get("region"), f"{where}.region"),
            tier=_int(spec.get("tier", 1), f"{where}.tier"),
            monthly_fen=_int(spec.get("monthly_fen"), f"{where}.monthly_fen"),
            effective_from=_date(spec.get("effective_from"), f"{where}.effective_from"),
            source=_str(spec.get("source"), f"{where}.source"),
            checked_on=_date(spec.get("checked_on"), f"{where}.checked_on"),
            confirmed=_bool(spec.get("confirmed", False), f"{where}.confirmed"),
            note=str(spec.get("note", "")),
        )
        key = (row.region, row.tier, row.effective_from)
        if key in seen:
            raise TableError(f"{where}: a second row for {row.region} tier {row.tier} from {row.effective_from}")
        seen.add(key)
        rows.append(row)
    return MinimumWageTable(regions, tuple(rows), origin=origin)


def _bundled() -> MinimumWageTable:
    text = (Path(__file__).parent / "minimum_wage.json").read_text(encoding="utf-8")
    return parse_table(json.loads(text), origin="bundled")


def load_table(override: Path | None = None) -> MinimumWageTable:
    """The bundled table, with the customer's file (if any) laid over it."""
    table = _bundled()
    if override is None:
        return table
    try:
        doc = json.loads(Path(override).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TableError(f"cannot read the minimum-wage table {override}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise TableError(f"{override}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    merged = table.merged_with(parse_table(doc, origin=str(override)))
    for row in merged.rows:
        if row.region not in merged.regions:
            raise TableError(f"{override}: rows for region {row.region} which the table does not define")
    return merged
