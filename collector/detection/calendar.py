"""The working calendar of ``after_hours``: is this moment working time for this user?

A day is a working day by, in order:
  1. the customer's own file (``after_hours.holiday_file``: ``{"2027-01-01": "holiday",
     "2027-02-07": "workday"}``), which a customer updates without a release;
  2. the ``chinese-calendar`` package: public holidays and the make-up working days (调休) that the
     State Council publishes each year, for the years the installed release covers;
  3. Monday to Friday, for a year neither knows (``describe`` says so, so an analyst is not misled).
The hours of a working day are the user's own, else their department's, else the default.

Pure: values in, values out. Reading the holiday file is the caller's (collector/detection/config.py
``load_holiday_file``); this module parses its text (``parse_holidays``) and never touches the disk,
the clock or the network. ``is_working_time`` never raises, whatever the time or user.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Mapping
from zoneinfo import ZoneInfo

import chinese_calendar
from chinese_calendar.constants import Holiday

from collector.detection.models import AfterHours, WorkingHours

__all__ = ["WorkingCalendar", "DayKind", "parse_holidays", "HolidayFileError"]

_WEEKDAYS = (("周一", "Monday"), ("周二", "Tuesday"), ("周三", "Wednesday"), ("周四", "Thursday"),
             ("周五", "Friday"), ("周六", "Saturday"), ("周日", "Sunday"))
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_DAY_CACHE_LIMIT = 4096  # about eleven years of days: the cache stays bounded whatever the events' times
_MINUTE_NS = 60 * 1_000_000_000
_MINUTE = dt.timedelta(minutes=1)
_MINUTE_CACHE_LIMIT = 100_000  # about ten weeks of minutes


class HolidayFileError(ValueError):
    """A customer holiday file that is not ``{"YYYY-MM-DD": "holiday" | "workday", ...}``."""


def parse_holidays(text: str) -> dict[dt.date, bool]:
    """Parses a customer holiday file: date -> True when it is a working day, False when a holiday."""
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HolidayFileError(f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc
    if not isinstance(raw, dict):
        raise HolidayFileError('expected an object like {"2027-01-01": "holiday", "2027-02-07": "workday"}')
    days: dict[dt.date, bool] = {}
    for key, value in raw.items():
        try:
            day = dt.date.fromisoformat(key)
        except ValueError as exc:
            raise HolidayFileError(f"{key!r} is not a date YYYY-MM-DD") from exc
        if value not in ("holiday", "workday"):
            raise HolidayFileError(f"{key}: expected \"holiday\" or \"workday\", got {value!r}")
        days[day] = value == "workday"
    return days


@dataclass(frozen=True)
class DayKind:
    """What a local date is, and why: the label ``describe`` shows."""

    working: bool
    label: str
    note: str = ""  # said after the hours: why the judgement is only a guess


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _span(hours: WorkingHours) -> tuple[int, int]:
    return _minutes(hours.start), _minutes(hours.end)


def _package_years() -> tuple[int, int]:
    days = chinese_calendar.holidays
    return min(days).year, max(days).year


class WorkingCalendar:
    """Working days (holidays, 调休, a customer's file) and each user's working hours, in one zone."""

    def __init__(self, settings: AfterHours, *, holidays: Mapping[dt.date, bool] | None = None) -> None:
        self._zone = ZoneInfo(settings.timezone)
        self._custom = dict(holidays or {})
        self._default = _span(settings.hours)
        self._users = {user: _span(h) for user, h in settings.users.items()}
        self._departments = {dept: _span(h) for dept, h in settings.departments.items()}
        self._user_departments = dict(settings.user_departments)
        self._first_year, self._last_year = _package_years()
        self._days: dict[dt.date, DayKind] = {}
        # minute since the epoch -> (a working day?, minute of the local day), for every user alike: a zone
        # whose offset is in whole minutes puts a whole UTC minute in one local minute (others are not kept)
        self._minutes: dict[int, tuple[bool, int]] = {}

    def hours_of(self, user: str) -> tuple[int, int]:
        """The user's working hours as minutes after local midnight: their own, their department's, or the default."""
        own = self._users.get(user)
        if own is not None:
            return own
        dept = self._user_departments.get(user)
        if dept is not None and dept in self._departments:
            return self._departments[dept]
        return self._default

    def day(self, day: dt.date) -> DayKind:
        """Whether a local date is a working day, and the words for why."""
        kind = self._days.get(day)
        if kind is None:
            if len(self._days) >= _DAY_CACHE_LIMIT:
                self._days.clear()
            kind = self._days[day] = self._judge(day)
        return kind

    def _judge(self, day: dt.date) -> DayKind:
        zh, en = _WEEKDAYS[day.weekday()]
        custom = self._custom.get(day)
        if custom is not None:
            if custom:
                return DayKind(True, f"客户日历：工作日 working day in the customer's calendar, {en}")
            return DayKind(False, f"客户日历：假日 holiday in the customer's calendar, {en}")
        if self._first_year <= day.year <= self._last_year:
            holiday = chinese_calendar.holidays.get(day)
            if holiday is not None:
                return DayKind(False, f"{_chinese(holiday)} {holiday} holiday")
            makeup = chinese_calendar.workdays.get(day)
            if makeup is not None:
                return DayKind(True, f"{_chinese(makeup)}调休上班 make-up working day for {makeup}, {en}")
            if day.weekday() >= 5:
                return DayKind(False, f"{zh} {en}, weekend")
            return DayKind(True, f"{zh} {en}, working day")
        guess = day.weekday() < 5
        what = "working day" if guess else "weekend"
        return DayKind(guess, f"{zh} {en}, {what}", f"; 无{day.year}年节假日数据，按周一至周五 "
                                                    f"no holiday data for {day.year}, Monday–Friday assumed")

    def _local(self, at_ns: int) -> dt.datetime | None:
        try:
            return (_EPOCH + dt.timedelta(microseconds=at_ns // 1000)).astimezone(self._zone)
        except (OverflowError, ValueError, OSError):
            return None

    def is_working_time(self, user: str, at_ns: int) -> bool:
        """True when ``at_ns`` (ns since the epoch) falls in ``user``'s working hours on a working day.

        A time outside what a date can hold (beyond years 1–9999) is not working time.
        """
        minute = at_ns // _MINUTE_NS
        found = self._minutes.get(minute)
        if found is None:
            found = self._local_minute(at_ns)
        working_day, local_minute = found
        if not working_day:
            return False
        start, end = self.hours_of(user)
        return start <= local_minute < end

    def _local_minute(self, at_ns: int) -> tuple[bool, int]:
        """Whether at_ns is on a local working day, and its minute of the local day; kept by minute when
        the zone's offset then is whole minutes."""
        local = self._local(at_ns)
        if local is None:
            return False, -1  # beyond what a date holds: never working time
        found = (self.day(local.date()).working, local.hour * 60 + local.minute)
        offset = local.utcoffset()
        if offset is not None and offset % _MINUTE == dt.timedelta(0):
            if len(self._minutes) >= _MINUTE_CACHE_LIMIT:
                self._minutes.clear()
            self._minutes[at_ns // _MINUTE_NS] = found
        return found

    def describe(self, user: str, at_ns: int) -> str:
        """The local date, what the day is and the time, e.g. "2026-10-03 (国庆节 National Day holiday) 22:14"."""
        local = self._local(at_ns)
        if local is None:
            return f"{at_ns} ns (时间超出范围 time out of range)"
        kind = self.day(local.date())
        label = kind.label
        if kind.working:
            start, end = self.hours_of(user)
            label += f" {start // 60:02d}:{start % 60:02d}–{end // 60:02d}:{end % 60:02d}"
        label += kind.note
        return f"{local.date().isoformat()} ({label}) {local.hour:02d}:{local.minute:02d}"


def _chinese(english: str) -> str:
    try:
        return str(Holiday(english).chinese)
    except ValueError:  # a holiday the package names but its enum does not (should not happen)
        return english
