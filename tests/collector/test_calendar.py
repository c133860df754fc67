"""The working calendar: Chinese holidays and 调休 from chinese-calendar, a customer's file, hours per person."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, strategies as st

from collector.detection.calendar import HolidayFileError, WorkingCalendar, parse_holidays
from collector.detection.config import load_rules, working_calendar
from collector.detection.models import AfterHours, WorkingHours

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(year: int, month: int, day: int, hour: int, minute: int = 0, zone: ZoneInfo = SHANGHAI) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=zone).timestamp()) * 1_000_000_000


DEFAULT = WorkingCalendar(AfterHours())


@pytest.mark.parametrize("day", range(1, 8))
def test_national_day_2026_is_not_working_time(day: int) -> None:
    assert not DEFAULT.is_working_time("u1042", at(2026, 10, day, 10))
    assert "国庆节 National Day holiday" in DEFAULT.describe("u1042", at(2026, 10, day, 10))


def test_the_day_after_national_day_2026_is_a_working_thursday() -> None:
    # the State Council's 2026 arrangement: 1–7 October off; the 8th is an ordinary Thursday
    assert DEFAULT.is_working_time("u1042", at(2026, 10, 8, 10))


def test_describe_names_the_holiday_and_the_local_time() -> None:
    assert DEFAULT.describe("u1042", at(2026, 10, 3, 22, 14)) == "2026-10-03 (国庆节 National Day holiday) 22:14"


@pytest.mark.parametrize("day", [dt.date(2026, 10, 10), dt.date(2026, 9, 20), dt.date(2026, 2, 28)])
def test_a_make_up_weekend_day_is_working_time(day: dt.date) -> None:
    # 调休: Saturday 10 October and Sunday 20 September 2026 are worked for National Day, 28 February for Spring Festival
    assert day.weekday() >= 5
    ns = at(day.year, day.month, day.day, 10)
    assert DEFAULT.is_working_time("u1042", ns)
    assert "调休上班 make-up working day" in DEFAULT.describe("u1042", ns)


def test_an_ordinary_weekend_is_not_working_time() -> None:
    assert not DEFAULT.is_working_time("u1042", at(2026, 10, 17, 10))  # a Saturday


def test_a_tuesday_at_ten_is_working_time_and_at_ten_at_night_is_not() -> None:
    assert dt.date(2026, 10, 13).weekday() == 1
    assert DEFAULT.is_working_time("u1042", at(2026, 10, 13, 10))
    assert not DEFAULT.is_working_time("u1042", at(2026, 10, 13, 22))
    assert DEFAULT.is_working_time("u1042", at(2026, 10, 13, 8, 30))  # start is in, end is out
    assert not DEFAULT.is_working_time("u1042", at(2026, 10, 13, 19, 0))
    assert not DEFAULT.is_working_time("u1042", at(2026, 10, 13, 8, 29))


def test_the_time_zone_decides_the_local_hour() -> None:
    utc = ZoneInfo("UTC")
    # 02:00 UTC is 10:00 in Shanghai
    assert DEFAULT.is_working_time("u1042", at(2026, 10, 13, 2, zone=utc))
    london = WorkingCalendar(AfterHours(timezone="Europe/London"))
    assert not london.is_working_time("u1042", at(2026, 10, 13, 2, zone=utc))


def test_hours_per_user_then_department_then_default() -> None:
    settings = AfterHours(
        users={"u1042": WorkingHours(start="10:00", end="22:00")},
        departments={"night": WorkingHours(start="20:00", end="23:30"), "finance": WorkingHours(start="09:00",
                                                                                                end="18:00")},
        user_departments={"u1042": "finance", "u7": "night", "u8": "finance"},
    )
    calendar = WorkingCalendar(settings)
    tuesday_21 = at(2026, 10, 13, 21)
    assert calendar.is_working_time("u1042", tuesday_21)  # own hours win over the department's
    assert calendar.is_working_time("u7", tuesday_21)  # the night department
    assert not calendar.is_working_time("u7", at(2026, 10, 13, 10))
    assert not calendar.is_working_time("u8", tuesday_21)  # finance ends at 18:00
    assert calendar.is_working_time("u8", at(2026, 10, 13, 9))
    assert not calendar.is_working_time("someone", at(2026, 10, 13, 8))  # the default starts 08:30
    assert calendar.is_working_time("someone", at(2026, 10, 13, 18, 30))
    assert "10:00–22:00" in calendar.describe("u1042", tuesday_21)
    # a holiday stays a holiday whatever the hours
    assert not calendar.is_working_time("u1042", at(2026, 10, 3, 12))


def test_the_customer_file_overrides_and_extends_the_package(tmp_path: Path) -> None:
    holidays = tmp_path / "holidays.json"
    holidays.write_text(json.dumps({
        "2026-10-13": "holiday",   # a company day off on a Tuesday
        "2026-10-03": "workday",   # a Saturday of National Day worked here
        "2027-01-01": "holiday",   # a year the package does not know yet
        "2027-02-06": "workday",   # a Saturday, a 2027 make-up day
    }))
    rules = tmp_path / "rules.toml"
    rules.write_text('[after_hours]\nholiday_file = "holidays.json"\n')
    calendar = working_calendar(load_rules(rules).after_hours)
    assert not calendar.is_working_time("u1042", at(2026, 10, 13, 10))
    assert calendar.is_working_time("u1042", at(2026, 10, 3, 10))
    assert not calendar.is_working_time("u1042", at(2027, 1, 1, 10))  # a Friday, but a holiday in the file
    assert calendar.is_working_time("u1042", at(2027, 2, 6, 10))
    assert "customer's calendar" in calendar.describe("u1042", at(2027, 1, 1, 10))
    assert DEFAULT.is_working_time("u1042", at(2026, 10, 13, 10))  # without the file it was a working day


def test_a_year_nobody_knows_falls_back_to_monday_to_friday_and_says_so() -> None:
    assert DEFAULT.is_working_time("u1042", at(2031, 3, 4, 10))  # a Tuesday
    assert not DEFAULT.is_working_time("u1042", at(2031, 3, 8, 10))  # a Saturday
    said = DEFAULT.describe("u1042", at(2031, 3, 8, 10))
    assert "no holiday data for 2031, Monday–Friday assumed" in said and said.startswith("2031-03-08 (")


@pytest.mark.parametrize(("text", "words"), [
    ("[]", "expected an object"),
    ('{"2027-1-1": "holiday"}', "not a date"),
    ('{"2027-01-01": "off"}', '"holiday" or "workday"'),
    ("{", "not JSON"),
])
def test_a_malformed_customer_file_is_refused(text: str, words: str) -> None:
    with pytest.raises(HolidayFileError, match=words):
        parse_holidays(text)


CALENDAR = WorkingCalendar(AfterHours(users={"u1": WorkingHours(start="00:00", end="23:59")},
                                      departments={"d": WorkingHours(start="12:00", end="13:00")},
                                      user_departments={"u2": "d"}),
                           holidays={dt.date(2027, 1, 1): False, dt.date(1970, 1, 3): True})


@given(user=st.one_of(st.sampled_from(["u1", "u2", "", "u1042"]), st.text()),
       at_ns=st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers()))
def test_is_working_time_never_raises(user: str, at_ns: int) -> None:
    working = CALENDAR.is_working_time(user, at_ns)
    assert isinstance(working, bool)
    assert isinstance(CALENDAR.describe(user, at_ns), str)


def _uncached(calendar: WorkingCalendar, zone: ZoneInfo, user: str, at_ns: int) -> bool:
    """What is_working_time says, worked out from the local time alone (no answer kept between calls)."""
    local = (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=at_ns // 1000)).astimezone(zone)
    start, end = calendar.hours_of(user)
    return calendar.day(local.date()).working and start <= local.hour * 60 + local.minute < end


_ZONES = ["Asia/Shanghai", "Europe/London", "Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns"]
_EDGES = [(8, 30), (8, 31), (8, 33), (19, 0), (0, 0), (23, 59)]  # where an answer changes, for these hours


@given(zone=st.sampled_from(_ZONES), day=st.one_of(st.dates(dt.date(1890, 1, 1), dt.date(1900, 12, 31)),
                                                   st.dates(dt.date(2024, 1, 1), dt.date(2031, 12, 31))),
       edge=st.sampled_from(_EDGES), seconds=st.lists(st.integers(-150, 150), min_size=1, max_size=12),
       nanos=st.sampled_from([0, 1, 999_999_999]))
def test_the_answers_kept_by_minute_are_what_the_local_time_says(zone: str, day: dt.date, edge: tuple[int, int],
                                                                 seconds: list[int], nanos: int) -> None:
    """The calendar keeps one answer a minute for every user: times seconds apart around a minute where
    an answer changes get what their own local time says, in zones of whole minutes and in those of
    seconds (local mean time, before 1901, where a UTC minute holds two local ones)."""
    calendar = WorkingCalendar(AfterHours(timezone=zone, users={"u1": WorkingHours(start="08:31", end="08:33")},
                                          departments={"d": WorkingHours(start="00:00", end="23:59")},
                                          user_departments={"u2": "d"}))
    local = dt.datetime(day.year, day.month, day.day, *edge, tzinfo=ZoneInfo(zone))
    t = int(local.timestamp()) * 10**9
    for s in seconds:
        when = t + s * 10**9 + nanos
        for who in ("u1", "u2", "u3"):
            assert calendar.is_working_time(who, when) == _uncached(calendar, ZoneInfo(zone), who, when)
