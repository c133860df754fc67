"""Pay periods (calendar months) and fen formatting: small values every other module shares."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date

__all__ = ["Period", "format_yuan"]

_PERIOD_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Period:
    """One pay period: a calendar month, ordered in calendar order."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1900 <= self.year <= 9998 or not 1 <= self.month <= 12:
            raise ValueError(f"not a pay period: {self.year}-{self.month}")

    @classmethod
    def parse(cls, text: object) -> Period:
        """Parses 'YYYY-MM'; raises ValueError for anything else."""
        if not isinstance(text, str):
            raise ValueError(f"expected a 'YYYY-MM' string, got {text!r}")
        m = _PERIOD_RE.match(text)
        if not m:
            raise ValueError(f"expected 'YYYY-MM', got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def of(cls, day: date) -> Period:
        """The period a day falls in."""
        return cls(day.year, day.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        return date(self.year, self.month, calendar.monthrange(self.year, self.month)[1])

    def index(self) -> int:
        """Months since year 0: differences of indexes count months."""
        return self.year * 12 + self.month - 1

    def shift(self, months: int) -> Period:
        """The period ``months`` later (or earlier when negative)."""
        i = self.index() + months
        return Period(i // 12, i % 12 + 1)


def format_yuan(fen: int) -> str:
    """Formats integer fen as yuan with two decimals and thousands separators: 160000 -> '1,600.00'."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan:,}.{cents:02d}"
