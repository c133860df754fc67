"""The rule engine on recorded event sequences, and its invariants: each built-in rule tested on what
it must and must not find; read_burst equal to the reference evaluation; every rule independent of
how the stream was cut into chunks; states bounded."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.detection.engine import Engine, Finding, build_rules
from collector.detection.models import RuleSet
from collector.detection.rules import ReadBurstRule
from collector.events.models import StoredEvent

MIN = 60 * 10**9
HOUR = 60 * MIN
CST = dt.timezone(dt.timedelta(hours=8))


def at(text: str) -> int:
    """Nanoseconds of a Beijing time, '2026-11-24 10:00'."""
    return int(dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=CST).timestamp()) * 10**9


def only(rule: str, **settings_: Any) -> RuleSet:
    off = {"enabled": False}
    given_ = {name: off for name in RuleSet.model_fields}
    given_[rule] = settings_
    return RuleSet.model_validate(given_)


_seq = iter(range(1, 10**9))


def ev(kind: str, t: int, *, user: str = "u1042", path: str = "/srv/finance/q3/report.xlsx", dest: str = "",
       agent: str = "agt-1", **attributes: Any) -> StoredEvent:
    n = next(_seq)
    return StoredEvent(agent, 1, n, f"e{n}", kind, t, path, dest, 100, "", user, 1000, 42, "cp", "/bin/cp", attributes)


def run(rules: RuleSet, events: Iterable[StoredEvent], chunks: int = 1) -> dict[str, set[str]]:
    """Runs the engine over the events, cut into this many chunks, with states through JSON (as stored)."""
    engine = Engine(build_rules(rules))
    events = list(events)
    stored: dict[tuple[str, str], str] = {}
    alerts: dict[str, set[str]] = {}
    size = max(1, -(-len(events) // chunks))
    for i in range(0, len(events), size):
        part = events[i:i + size]
        keys = engine.keys(part)
        states = {k: json.loads(stored[k]) for k in keys if k in stored}
        for f in engine.run(states, part):
            alerts.setdefault(f.group_key, set()).update(f.event_ids)
        stored.update({k: json.dumps(states[k]) for k in keys if k in states})
    return alerts


def findings(rules: RuleSet, events: Iterable[StoredEvent]) -> list[Finding]:
    return Engine(build_rules(rules)).run({}, list(events))


def test_five_files_to_a_stick_in_a_minute_are_one_usb_alert_with_five_events() -> None:
    t = at("2026-11-24 10:00")
    writes = [ev("usb.write", t + i * 10**10, path=f"/media/u/STICK/f{i}.xlsx", match="exact",
                 source_paths=[f"/srv/finance/f{i}.xlsx"], device="/dev/sdb1") for i in range(5)]
    plain = ev("usb.write", t + 70 * 10**9, path="/media/u/STICK/holiday.jpg")  # no sensitive content: not evidence
    [f] = findings(only("usb_exfiltration"), [*writes, plain])
    assert f.rule == "usb_exfiltration" and f.severity == "high" and f.event_ids == [w.id for w in writes]
    assert "wrote 5 file(s) with sensitive content to /dev/sdb1" in f.summary
    later = ev("usb.write", t + 3 * HOUR, match="partial", source_paths=["/srv/finance/x"])
    assert len(run(only("usb_exfiltration"), [*writes, later])) == 2  # hours later: another alert


def test_a_company_issued_stick_is_still_an_alert_but_a_lower_one_of_its_own() -> None:
    t = at("2026-11-24 10:00")
    issued = [ev("usb.write", t + i * 10**10, path=f"/media/u/CORP/f{i}.xlsx", match="exact", company_device=True,
                 source_paths=[f"/srv/finance/f{i}.xlsx"], device="/dev/sdb1") for i in range(2)]
    unknown = ev("usb.write", t + 30 * 10**9, path="/media/u/STICK/q3.xlsx", match="exact", company_device=False,
                 source_paths=["/srv/finance/q3.xlsx"], device="/dev/sdc1")
    got = {f.severity: f for f in findings(only("usb_exfiltration"), [*issued, unknown])}
    assert set(got) == {"low", "high"}
    assert got["low"].event_ids == [w.id for w in issued] and "company-issued /dev/sdb1" in got["low"].summary
    assert got["high"].event_ids == [unknown.id]
    medium = findings(only("usb_exfiltration", company_device_severity="medium"), issued)
    assert [f.severity for f in medium] == ["medium"]


def test_a_copy_into_a_sync_folder_is_a_copy_out_and_says_so() -> None:
    t = at("2026-11-24 10:00")
    copy = ev("file.copy", t, dest="/home/u1042/Nutstore/q3.xlsx", source_paths=["/srv/finance/q3.xlsx"], match="exact")
    moved = ev("file.move", t + MIN, dest="/home/u1042/tmp/q3.xlsx", moved_out=True)
    inside = ev("file.move", t + 2 * MIN, dest="/srv/finance/old/q3.xlsx")  # within the sensitive folders
    [f] = findings(only("sensitive_copy_out"), [copy, moved, inside])
    assert f.event_ids == [copy.id, moved.id]
    assert "Nutstore" in findings(only("sensitive_copy_out"), [copy])[0].summary
    assert "sync folder" in findings(only("sensitive_copy_out"), [copy])[0].summary


def _hourly_reads(user: str, start: int, hours: int, per_hour: int) -> list[StoredEvent]:
    out = []
    for h in range(hours):
        for i in range(per_hour):
            out.append(ev("file.read", start + h * HOUR + i * (HOUR // (per_hour + 1)), user=user,
                          path=f"/srv/finance/d{h % 7}/f{i}.xlsx"))
    return out


def test_bulk_read_spares_a_heavy_but_normal_user_and_finds_their_unusual_hour() -> None:
    rules = only("bulk_read", floor_per_hour=100, cold_start_hours=24)  # new users: 200 an hour at most
    start = at("2026-11-02 00:00")
    normal = _hourly_reads("heavy", start, 24 * 5, 150)  # 150 an hour, every hour, for five days
    assert run(rules, normal) == {}  # heavy, but their own normal: above the floor and still nothing
    spike = _hourly_reads("heavy", start + 24 * 5 * HOUR, 1, 900)
    [(group, ids)] = run(rules, normal + spike).items()
    assert group.startswith("bulk_read|heavy|") and len(ids) > 700
    [f] = [f for f in findings(rules, normal + spike) if f.user == "heavy"]
    assert "their usual is 150 an hour" in f.summary


def test_bulk_read_judges_a_new_user_by_the_floor() -> None:
    rules = only("bulk_read", floor_per_hour=50, cold_start_hours=24, cold_start_factor=2.0)
    start = at("2026-11-02 09:00")
    assert run(rules, _hourly_reads("new", start, 1, 100)) == {}
    [f] = findings(rules, _hourly_reads("new2", start, 1, 101))
    assert "no baseline yet" in f.summary


def test_first_access_waits_out_the_learning_period_then_names_the_new_folder() -> None:
    rules = only("first_access", learning_days=7, folder_depth=3)
    start = at("2026-11-02 10:00")
    learning = [ev("file.read", start + d * 24 * HOUR, path=f"/srv/finance/{d % 2}/x") for d in range(8)]
    again = ev("file.read", start + 9 * 24 * HOUR, path="/srv/finance/1/y")
    new = ev("file.read", start + 9 * 24 * HOUR + MIN, path="/srv/hr/salaries/2026.xlsx")
    [f] = findings(rules, [*learning, again, new])
    assert f.event_ids == [new.id] and "/srv/hr/salaries" in f.summary


def test_first_access_state_is_bounded() -> None:
    rules = only("first_access", learning_days=0, folder_depth=3, max_folders_per_user=10)
    engine = Engine(build_rules(rules))
    states: dict[tuple[str, str], dict[str, Any]] = {}
    engine.run(states, [ev("file.read", at("2026-11-02 10:00") + i, path=f"/a/b/{i}/x") for i in range(1000)])
    [state] = states.values()
    assert len(state["seen"]) == 10 and state["full"]


def test_after_hours_on_a_holiday_and_at_night_but_not_on_a_working_afternoon() -> None:
    rules = only("after_hours", min_events=3)
    working = [ev("file.read", at("2026-11-24 15:00") + i * MIN) for i in range(10)]  # a Tuesday afternoon
    night = [ev("file.read", at("2026-11-24 23:10") + i * MIN) for i in range(3)]
    holiday = [ev("file.read", at("2026-10-02 11:00") + i * MIN) for i in range(3)]  # 国庆节
    assert run(rules, working) == {}
    assert len(run(rules, working + night)) == 1
    assert len(run(rules, holiday)) == 1


def test_capture_gaps_and_a_full_spool_are_alerts_of_their_agent() -> None:
    t = at("2026-11-24 10:00")
    gap = ev("agent.capture_gap", t, user="", path="", source="inotify", lost=12)
    full = ev("agent.spool_full", t + MIN, user="", path="", refused=300)
    got = {f.rule: f for f in findings(only("read_burst", enabled=False), [gap, full])}
    assert got["capture_gap"].agent_id == "agt-1" and "lost=12" in got["capture_gap"].summary
    assert got["spool_loss"].severity == "high"


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.integers(0, 90), min_size=1, max_size=60), threshold=st.integers(1, 8))
def test_read_burst_finds_exactly_what_the_reference_evaluation_finds(gaps: list[int], threshold: int) -> None:
    t, events = at("2026-11-24 10:00"), []
    for g in gaps:
        t += g * 10**9
        events.append(ev("file.read", t, user="u"))
    reference = ReadBurstRule(threshold=threshold, window_ns=MIN).evaluate(events)
    got = run(only("read_burst", threshold=threshold, window_minutes=1), events)
    assert sorted(map(sorted, got.values())) == sorted(sorted(f.event_ids) for f in reference)


_KINDS = st.sampled_from(["file.read", "file.read", "file.read", "usb.write", "file.copy", "file.move",
                          "agent.capture_gap"])


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(_KINDS, st.integers(0, 40 * MIN), st.sampled_from(["a", "b"]),
                                st.integers(0, 5)), min_size=1, max_size=80),
       chunks=st.integers(1, 12))
def test_no_rule_depends_on_how_the_stream_is_cut(steps: list[tuple[str, int, str, int]], chunks: int) -> None:
    t, events = at("2026-11-28 21:00"), []  # a Saturday evening: after_hours is in play too
    for kind, gap, user, folder in steps:
        t += gap
        events.append(ev(kind, t, user=user, path=f"/srv/s{folder}/f/x", dest=f"/home/{user}/OneDrive/x",
                         match="exact", source_paths=["/srv/s/x"], moved_out=True))
    rules = RuleSet.model_validate({"read_burst": {"threshold": 3, "window_minutes": 5},
                                    "bulk_read": {"floor_per_hour": 5, "cold_start_hours": 0},
                                    "first_access": {"learning_days": 0.01}, "after_hours": {"min_events": 2}})
    assert run(rules, events, chunks=chunks) == run(rules, events, chunks=1)


_GLOB = st.text(alphabet="/ab*?[]!.-N", min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(_GLOB, max_size=6), st.text(alphabet="/ab.-Nx\n", max_size=16))
def test_the_sync_folders_are_matched_as_fnmatch_matches_them_one_by_one(patterns: list[str], where: str) -> None:
    """The rule matches a destination against all sync folders with one expression; it names the same
    pattern fnmatch finds first (or none)."""
    import fnmatch

    from collector.detection.engine import SensitiveCopyOut

    rule = SensitiveCopyOut(gap_ns=MIN, severity="high", sync_folders=tuple(patterns), tz=CST)
    assert rule._sync_folder(where) == next((p for p in patterns if fnmatch.fnmatch(where, p)), None)


def _plain_run(rules: list[Any], states: dict[tuple[str, str], Any], events: list[StoredEvent]) -> list[Finding]:
    """The engine as the Rule protocol reads: every rule, in order, keys every event of its kinds with
    ``key`` and steps it; findings of a group merged in order."""
    merged: dict[str, Finding] = {}
    for e in events:
        for rule in rules:
            if e.kind not in rule.kinds:
                continue
            k = rule.key(e)
            if k is None:
                continue
            found = rule.step(states.setdefault((rule.name, k), {}), e)
            if found is None:
                continue
            have = merged.get(found.group_key)
            if have is None:
                merged[found.group_key] = found
            else:
                have.event_ids.extend(found.event_ids)
                have.last_ns, have.sentence, have.path = max(have.last_ns, found.last_ns), found.sentence, found.path
    return list(merged.values())


def _seen(found: list[Finding]) -> list[tuple[Any, ...]]:
    return [(f.rule, f.severity, f.group_key, f.user, f.agent_id, f.event_ids, f.first_ns, f.last_ns, f.summary, f.path)
            for f in found]


_ANY_KIND = st.sampled_from(["file.read", "file.read", "file.write", "file.copy", "file.move", "file.delete",
                             "usb.write", "agent.capture_gap", "agent.spool_full", "process.exec"])


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(_ANY_KIND, st.integers(0, 20 * MIN), st.sampled_from(["a", "b", ""]),
                                st.integers(0, 4), st.booleans()), min_size=1, max_size=80),
       cuts=st.integers(1, 5))
def test_the_engine_finds_what_the_rules_find_stepped_one_by_one(steps: list[tuple[str, int, str, int, bool]],
                                                                 cuts: int) -> None:
    """Keying an event once per run of rules alike (``keyed_by``) and keeping each rule's states apart
    gives the findings, in their order, the states and the keys the plain protocol loop gives."""
    t, events = at("2026-11-28 21:00"), []
    for kind, gap, user, folder, flag in steps:
        t += gap
        events.append(ev(kind, t, user=user, path=f"/srv/s{folder}/f/x", dest=f"/home/{user}/OneDrive/x",
                         match="exact" if flag else "", source_paths=["/srv/s/x"], moved_out=flag,
                         company_device=flag))
    rules = RuleSet.model_validate({"read_burst": {"threshold": 3, "window_minutes": 5},
                                    "bulk_read": {"floor_per_hour": 5, "cold_start_hours": 0},
                                    "first_access": {"learning_days": 0.01}, "after_hours": {"min_events": 2}})
    engine, plain = Engine(build_rules(rules)), build_rules(rules)
    states: dict[tuple[str, str], Any] = {}
    expected: dict[tuple[str, str], Any] = {}
    size = -(-len(events) // cuts)
    for i in range(0, len(events), size):
        part = events[i:i + size]
        wanted = {(r.name, k) for e in part for r in plain if e.kind in r.kinds for k in [r.key(e)] if k is not None}
        assert engine.keys(part) == wanted
        assert _seen(engine.run(states, part)) == _seen(_plain_run(plain, expected, part))
        assert states == expected
    assert engine.steps == sum(1 for e in events for r in plain if e.kind in r.kinds and r.key(e) is not None)


@settings(max_examples=300, deadline=None)
@given(st.data(), _GLOB)
def test_every_string_a_sync_folder_matches_holds_its_plain_run(data: st.DataObject, pattern: str) -> None:
    """The copy rule skips the expression for a destination holding none of the patterns' plain runs:
    a run is in every string fnmatch matches (strings made from the pattern's own expression)."""
    import fnmatch
    import re

    from collector.detection.engine import _literal

    try:
        made = data.draw(st.from_regex(re.compile(fnmatch.translate(pattern)), fullmatch=True))
    except Exception:  # noqa: BLE001 - a pattern that matches nothing ("[b-a]"): nothing to hold
        return
    assert fnmatch.fnmatch(made, pattern) and _literal(pattern) in made


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="/ab.", max_size=14), st.integers(1, 5))
def test_a_paths_folder_is_its_first_components(path: str, depth: int) -> None:
    """The folder of a path is "/" and its first ``depth`` non-empty components, whichever way it is cut."""
    from collector.detection.engine import _folder

    parts = [p for p in path.split("/") if p]
    assert _folder(path, depth) == "/" + "/".join(parts[:depth])
    assert _folder(path, depth) == "/" + "/".join(parts[:depth])  # kept, the same
