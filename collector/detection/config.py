"""The rules file: TOML that security edits, read into a ``RuleSet`` or refused naming the line and the key.

    [read_burst]
    threshold = 20
    [after_hours.users."u1042"]
    start = "10:00"
    end = "22:00"

Every rule and key, with its default, is in installers/linux/rules.toml.example. An empty file means
the defaults. What is refused, beyond what collector/detection/models.py refuses (unknown keys, wrong
types, impossible values):

- a rule that would match (nearly) every event:
  * ``read_burst.threshold`` below 1: every read would be a burst (the model's bound);
  * ``bulk_read.floor_per_hour`` of 1 when ``sigmas`` is below 1 (an ordinary user's busier hours, one in
    six or more, would fire) or when new users are judged by a floor times ``cold_start_factor`` below 2
    (every new user's every hour with two reads would fire);
  * a ``sensitive_copy_out.sync_folders`` pattern that matches any path ("*", "/*", "**", "*/*": made only
    of "*", "?" and "/", or matching every probe path): every copy would be "into a sync folder";
  * an ``after_hours`` working day of zero length (end not after start) or under an hour: every access
    would be after hours;
  * ``first_access.folder_depth`` 1 (everything under "/" one folder) or ``learning_days`` below 1 (every
    folder a user opens on their first day would fire);
- a rule whose state would grow without bound: ``first_access.max_folders_per_user`` and
  ``bulk_read.baseline_days`` above the model's limits;
- settings that would silently not apply: an unknown time zone, a user's department that has no hours,
  a holiday file that is missing or malformed.

Errors: ``RulesError`` (one problem, with ``line``, ``key`` and ``message``; ``problems`` holds every problem
found, first one first). Reading is the only I/O here (``load_rules``, ``load_holiday_file``);
``parse_rules`` is pure.
"""

from __future__ import annotations

import datetime as dt
import difflib
import fnmatch
import json
import logging
import math
import re
import tomllib
import zoneinfo
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from collector.detection.calendar import HolidayFileError, WorkingCalendar, parse_holidays
from collector.detection.models import RULE_NAMES, AfterHours, RuleSet, WorkingHours

__all__ = ["RulesError", "load_rules", "parse_rules", "summarize", "load_holiday_file", "working_calendar"]

log = logging.getLogger("shoumi.collector.detection")

_KeyPath = tuple[str | int, ...]

# paths no real folder pattern matches all of: a pattern that does is taken to match everything
_PROBE_PATHS = ("/a", "/srv/finance/客户名单.xlsx", "/home/u1042/Documents/q3 report.docx", "/tmp/x.zip",
                "/media/usb0/DCIM/1.jpg", "C:\\Users\\u\\Desktop\\a.txt")

# why a bound exists, said with pydantic's bound
_WHY: dict[tuple[str, ...], str] = {
    ("read_burst", "threshold"): "below 1 every read would be a burst",
    ("bulk_read", "floor_per_hour"): "below 1 every hour with a read would pass the floor",
    ("first_access", "max_folders_per_user"): "the folders remembered per user are the rule's state; "
                                              "above the limit it would grow without bound",
    ("bulk_read", "baseline_days"): "the per-hour baseline is the rule's state; above the limit it would "
                                    "grow without bound",
    ("first_access", "folder_depth"): "deeper paths would make every file its own folder",
}


class RulesError(Exception):
    """A rules file that cannot be used: where (``line``, 1-based, None when unknown), which key, and why."""

    def __init__(self, message: str, *, key: str = "rules", line: int | None = None, source: str = "FILE",
                 problems: Sequence["RulesError"] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.line = line
        self.source = source
        self.problems: tuple[RulesError, ...] = tuple(problems) or (self,)

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.key}: {self.message}"

    def render(self) -> str:
        """Every problem found, one a line, as ``FILE:LINE: KEY: message``."""
        return "\n".join(str(p) for p in self.problems)


# ---------------------------------------------------------------------------------------------------
# Where keys are: tomllib gives values without lines, so the text is scanned for table headers and
# ``key =`` (dotted and quoted keys, inline tables) well enough to name the line of each key.

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _parse_key(text: str, i: int) -> tuple[list[str], int] | None:
    """Reads a (dotted, quoted) key at ``text[i:]``; returns its parts and the index after it."""
    parts: list[str] = []
    n = len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return None
        if text[i] in "\"'":
            quote = text[i]
            end = i + 1
            while end < n and text[end] != quote:
                end += 2 if text[end] == "\\" and quote == '"' else 1
            if end >= n:
                return None
            raw = text[i + 1:end]
            parts.append(raw.encode().decode("unicode_escape") if quote == '"' and "\\" in raw else raw)
            i = end + 1
        else:
            m = _BARE.match(text, i)
            if not m:
                return None
            parts.append(m.group())
            i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == ".":
            i += 1
            continue
        return parts, i


class _KeyLines:
    """Maps key paths (as tuples of str) to the line they are set on."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        self.table_at: list[tuple[int, tuple[str, ...]]] = []  # (line, table in effect from it)
        self._text_lines = text.splitlines()
        table: tuple[str, ...] = ()
        for number, line in enumerate(self._text_lines, start=1):
            stripped = line.lstrip()
            if stripped.startswith("["):
                header = stripped[2:] if stripped.startswith("[[") else stripped[1:]
                parsed = _parse_key(header, 0)
                if parsed is not None:
                    table = tuple(parsed[0])
                    self._note(table, number)
                    self.table_at.append((number, table))
                continue
            parsed = _parse_key(line, 0)
            if parsed is None:
                continue
            parts, i = parsed
            if not line[i:].startswith("="):
                continue
            path = table + tuple(parts)
            self._note(path, number)
            rest = line[i + 1:].lstrip()
            if rest.startswith("{"):
                self._inline(rest, path, number)

    def _note(self, path: tuple[str, ...], number: int) -> None:
        for k in range(1, len(path) + 1):
            self.lines.setdefault(path[:k], number)

    def _inline(self, text: str, base: tuple[str, ...], number: int) -> None:
        """Notes the keys of an inline table (nested ones too) on its line."""
        stack = [base]
        i, n = 0, len(text)
        expect_key = False
        while i < n:
            c = text[i]
            if c in "\"'" and not expect_key:
                end = text.find(c, i + 1)
                i = n if end < 0 else end + 1
                continue
            if c == "{":
                expect_key = True
                i += 1
                continue
            if c == ",":
                expect_key = True
                i += 1
                continue
            if c == "}":
                if len(stack) > 1:
                    stack.pop()
                i += 1
                continue
            if expect_key and c not in " \t":
                parsed = _parse_key(text, i)
                if parsed is None:
                    return
                parts, i = parsed
                if not text[i:].startswith("="):
                    return
                path = stack[-1] + tuple(parts)
                self._note(path, number)
                i += 1
                while i < n and text[i] in " \t":
                    i += 1
                if i < n and text[i] == "{":
                    stack.append(path)
                    i += 1
                    continue
                expect_key = False
                continue
            i += 1

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of the deepest part of ``path`` that the text names (a list item: the line holding it)."""
        names = tuple(p for p in path if isinstance(p, str))
        for k in range(len(names), 0, -1):
            line = self.lines.get(names[:k])
            if line is not None:
                return line
        return None

    def line_of_item(self, path: Sequence[str], literal: str) -> int | None:
        """The line, from the key's on, that holds a string item ``literal`` of the array at ``path``."""
        start = self.line_of(path)
        if start is None:
            return None
        for number in range(start, len(self._text_lines) + 1):
            line = self._text_lines[number - 1]
            if f'"{literal}"' in line or f"'{literal}'" in line:
                return number
            if number > start and ("=" in line.split("#")[0] or line.lstrip().startswith("[")):
                break
        return start

    def key_at(self, number: int) -> tuple[str, ...]:
        """The key set on a line, or the table in effect there: for syntax errors."""
        for path, line in sorted(self.lines.items(), key=lambda kv: -len(kv[0])):
            if line == number:
                return path
        table: tuple[str, ...] = ()
        for line, t in self.table_at:
            if line <= number:
                table = t
        return table


def _dotted(path: Iterable[str | int]) -> str:
    out = "rules"
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _BARE.fullmatch(p):
            out += f".{p}"
        else:
            out += "." + json.dumps(p, ensure_ascii=False)
    return out


# ---------------------------------------------------------------------------------------------------
# Parsing


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "dict_type": "a table",
    "model_type": "a table", "model_attributes_type": "a table", "tuple_type": "an array",
    "list_type": "an array",
}


def _fields(path: Sequence[str | int]) -> tuple[str, ...]:
    """The keys a table at ``path`` may hold (for suggestions)."""
    model: type[BaseModel] = RuleSet
    for part in path:
        if not isinstance(part, str) or part not in model.model_fields:
            return ()
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif part in ("users", "departments"):
            model = WorkingHours
            break
        else:
            return ()
    return tuple(model.model_fields)


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(choices)}"


def _message(err: Mapping[str, Any], path: _KeyPath) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    names = tuple(p for p in path if isinstance(p, str))
    why = _WHY.get(names[-2:]) if len(names) >= 2 else None
    if kind == "extra_forbidden":
        parent = path[:-1]
        name = str(path[-1])
        if not parent:
            return f"unknown rule {name!r}" + _suggest(name, RULE_NAMES)
        return f"unknown key {name!r}" + _suggest(name, _fields(parent))
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_toml_type(value)} {json.dumps(value, ensure_ascii=False, default=str)}"
    bounds = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most",
              "less_than": "less than"}
    if kind in bounds:
        bound = next(iter(ctx.values()), "?")
        text = f"must be {bounds[kind]} {bound}, got {value}"
        if kind in ("greater_than", "greater_than_equal") and isinstance(value, (int, float)) and value <= 0:
            text = f"a negative or zero value is refused: {text}"
        return f"{text} ({why})" if why else text
    if kind == "string_pattern_mismatch":
        if names and names[-1] == "severity":
            return f"expected one of low, medium, high, critical, got {value!r}"
        if names and names[-1] in ("start", "end"):
            return f"expected a time HH:MM between 00:00 and 23:59, got {value!r}"
    if kind == "value_error" and names and (names[-1] == "hours" or names[-2:-1] in (("users",), ("departments",))):
        return (str(err["msg"]).removeprefix("Value error, ")
                + ": a working day of zero length would put every access after hours")
    return str(err["msg"])


def _reject_dates(data: Any, path: _KeyPath, out: list[tuple[_KeyPath, str]]) -> None:
    """TOML dates and times: no setting takes one (JSON validation would turn them into strings)."""
    if isinstance(data, dict):
        for k, v in data.items():
            _reject_dates(v, path + (k,), out)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _reject_dates(v, path + (i,), out)
    elif isinstance(data, float) and not math.isfinite(data):
        out.append((path, f"expected a finite number, got {data}"))
    elif not isinstance(data, (str, int, float, bool)):
        out.append((path, f"expected a string, number or boolean, got a TOML date/time {data}"))


def _matches_everything(pattern: str) -> bool:
    if not pattern.strip("*?/") and "*" in pattern:
        return True
    return all(fnmatch.fnmatchcase(p, pattern) for p in _PROBE_PATHS)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _semantic(rules: RuleSet) -> list[tuple[_KeyPath, str]]:
    """What the models accept but would match everything or silently not apply."""
    out: list[tuple[_KeyPath, str]] = []
    b = rules.bulk_read
    if b.floor_per_hour == 1 and b.sigmas < 1:
        out.append((("bulk_read", "floor_per_hour"),
                    f"floor 1 with sigmas {b.sigmas} (below 1) would fire on an ordinary user's busier hours, "
                    "one in six or more: raise the floor or the sigmas"))
    elif b.cold_start_hours > 0 and b.floor_per_hour * b.cold_start_factor < 2:
        out.append((("bulk_read", "floor_per_hour"),
                    f"floor 1 times cold_start_factor {b.cold_start_factor} is below 2: every new user's every "
                    "hour with two reads would fire"))
    for i, pattern in enumerate(rules.sensitive_copy_out.sync_folders):
        if not pattern.strip():
            out.append((("sensitive_copy_out", "sync_folders", i), "an empty pattern"))
        elif _matches_everything(pattern):
            out.append((("sensitive_copy_out", "sync_folders", i),
                        f"{pattern!r} matches every path: every copy would count as into a sync folder"))
    a = rules.after_hours
    try:
        zoneinfo.ZoneInfo(a.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        out.append((("after_hours", "timezone"), f"unknown time zone {a.timezone!r}; e.g. \"Asia/Shanghai\""))
    spans: list[tuple[_KeyPath, WorkingHours]] = [(("after_hours", "hours"), a.hours)]
    spans += [(("after_hours", "users", u), h) for u, h in a.users.items()]
    spans += [(("after_hours", "departments", d), h) for d, h in a.departments.items()]
    for path, hours in spans:
        if _minutes(hours.end) - _minutes(hours.start) < 60:
            out.append((path, f"a working day {hours.start}–{hours.end} is under an hour: nearly every access "
                              "would be after hours"))
    for user, dept in a.user_departments.items():
        if dept not in a.departments:
            known = tuple(a.departments)
            hint = _suggest(dept, known) if known else "; after_hours.departments names none"
            out.append((("after_hours", "user_departments", user),
                        f"department {dept!r} has no hours in after_hours.departments{hint}"))
    f = rules.first_access
    if f.folder_depth < 2:
        out.append((("first_access", "folder_depth"),
                    "1 makes everything under \"/\" one folder (/srv, /home): the rule could not tell one "
                    "sensitive folder from another; use 2 or more"))
    if f.learning_days < 1:
        out.append((("first_access", "learning_days"),
                    f"{f.learning_days} (below 1): every folder a user opens on their first day would fire"))
    return out


def parse_rules(text: str, *, source: str = "FILE") -> RuleSet:
    """Reads a rules file's text over the defaults; raises RulesError naming the line and key at fault."""
    text = text.removeprefix("\ufeff")
    keys = _KeyLines(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(m.group(1)) if m else (len(text.splitlines()) or 1)
        message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        if m:
            message += f" (column {m.group(2)})"
        raise RulesError(f"TOML syntax: {message}", key=_dotted(keys.key_at(line)), line=line,
                         source=source) from exc

    def problem(path: _KeyPath, message: str) -> RulesError:
        if len(path) >= 3 and path[:2] == ("sensitive_copy_out", "sync_folders") and isinstance(path[2], int):
            items = _rules_items(data)
            literal = items[path[2]] if path[2] < len(items) else ""
            line = keys.line_of_item(("sensitive_copy_out", "sync_folders"), literal)
        else:
            line = keys.line_of([p for p in path if isinstance(p, str)])
        if line is None:
            line = keys.line_of([p for p in path[:1] if isinstance(p, str)])
        return RulesError(message, key=_dotted(path), line=line, source=source)

    found: list[RulesError] = []
    rules = RuleSet()
    dates: list[tuple[_KeyPath, str]] = []
    _reject_dates(data, (), dates)
    for path, message in dates:
        found.append(problem(path, message))
    if not found:
        try:
            rules = RuleSet.model_validate_json(json.dumps(data), strict=True)
        except ValidationError as exc:
            for err in exc.errors():
                path = tuple(err["loc"])
                found.append(problem(path, _message(err, path)))
        else:
            for path, message in _semantic(rules):
                found.append(problem(path, message))
    if found:
        found.sort(key=lambda e: (e.line is None, e.line or 0))
        first = found[0]
        raise RulesError(first.message, key=first.key, line=first.line, source=source, problems=found)
    return rules


def _rules_items(data: Mapping[str, Any]) -> list[str]:
    """The sync-folder patterns as written (for the line of a bad one)."""
    table = data.get("sensitive_copy_out")
    items = table.get("sync_folders") if isinstance(table, dict) else None
    return [str(x) for x in items] if isinstance(items, list) else []


def load_holiday_file(path: str | Path) -> dict[dt.date, bool]:
    """Reads a customer holiday file (see collector/detection/calendar.py); raises HolidayFileError or OSError."""
    return parse_holidays(Path(path).read_text(encoding="utf-8"))


def load_rules(path: str | Path) -> RuleSet:
    """Reads the rules file at ``path``; raises RulesError naming the line and key at fault.

    A relative ``after_hours.holiday_file`` is taken from the rules file's folder, and the holiday
    file is read once here, so a missing or malformed one is refused at load like any other mistake.
    """
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RulesError(f"cannot read the rules file: {exc.strerror or exc}", source=source) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise RulesError("not UTF-8 text", line=line, source=source) from exc
    rules = parse_rules(text, source=source)
    holiday_file = rules.after_hours.holiday_file
    if holiday_file is not None:
        resolved = (path.parent / holiday_file).resolve()
        keys = _KeyLines(text.removeprefix("\ufeff"))
        at = keys.line_of(("after_hours", "holiday_file"))
        try:
            load_holiday_file(resolved)
        except OSError as exc:
            raise RulesError(f"cannot read {str(resolved)!r}: {exc.strerror or exc}",
                             key="rules.after_hours.holiday_file", line=at, source=source) from exc
        except (HolidayFileError, UnicodeDecodeError) as exc:
            raise RulesError(f"{str(resolved)!r}: {exc}", key="rules.after_hours.holiday_file", line=at,
                             source=source) from exc
        after = rules.after_hours.model_copy(update={"holiday_file": str(resolved)})
        rules = rules.model_copy(update={"after_hours": after})
    return rules


def working_calendar(settings: AfterHours) -> WorkingCalendar:
    """The calendar of ``after_hours`` with its customer holiday file read (an absolute path after load_rules).

    The detection engine should build its calendar here rather than from ``WorkingCalendar(settings)``,
    which knows only the package's holidays.
    """
    holidays = load_holiday_file(settings.holiday_file) if settings.holiday_file else None
    return WorkingCalendar(settings, holidays=holidays)


def summarize(rules: RuleSet) -> str:
    """One line: the rules in force and their main settings."""
    parts: list[str] = []
    r = rules
    described = {
        "read_burst": f"read_burst >{r.read_burst.threshold} reads/{r.read_burst.window_minutes:g} min",
        "bulk_read": f"bulk_read >{r.bulk_read.floor_per_hour}/h and {r.bulk_read.sigmas:g}σ over "
                     f"{r.bulk_read.baseline_days} d",
        "usb_exfiltration": "usb_exfiltration",
        "sensitive_copy_out": f"sensitive_copy_out ({len(r.sensitive_copy_out.sync_folders)} sync folders)",
        "after_hours": f"after_hours {r.after_hours.hours.start}–{r.after_hours.hours.end} {r.after_hours.timezone}"
                       f" (users: {len(r.after_hours.users)}, departments: {len(r.after_hours.departments)}"
                       f"{', holiday file' if r.after_hours.holiday_file else ''})",
        "first_access": f"first_access after {r.first_access.learning_days:g} d (depth {r.first_access.folder_depth})",
    }
    on = [name for name in RULE_NAMES if getattr(rules, name).enabled]
    for name in RULE_NAMES:
        text = described.get(name, name)
        parts.append(text if name in on else f"{name} off")
    return f"{len(on)} of {len(RULE_NAMES)} rules on: " + "; ".join(parts)
