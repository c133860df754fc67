"""The rules file: every kind of mistake is refused naming its line and key; the CLI's exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.detection.config import RulesError, load_rules, parse_rules, summarize, working_calendar
from collector.detection.models import RULE_NAMES, RuleSet, WorkingHours
from collector.settings import CollectorSettings
from collector.wiring import build_services, reload_rules

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "installers" / "linux" / "rules.toml.example"

BRIEF_EXAMPLE = """\
[read_burst]
threshold = 20
window_minutes = 5
[bulk_read]
floor_per_hour = 100
[after_hours]
timezone = "Asia/Shanghai"
hours = { start = "08:30", end = "19:00" }
[after_hours.users."u1042"]
start = "10:00"
end = "22:00"
[sensitive_copy_out]
sync_folders = ["*/Nutstore/*", "*/OneDrive/*"]
"""


def refused(text: str) -> RulesError:
    with pytest.raises(RulesError) as info:
        parse_rules(text, source="rules.toml")
    return info.value


# (file text, line, key, words the message must hold)
CASES = [
    pytest.param("[read_burst]\nthreshold = = 2\n", 2, "rules.read_burst.threshold", "TOML syntax", id="syntax"),
    pytest.param("# a comment\n\n[bulk_read\nfloor_per_hour = 3\n", 3, "rules.bulk_read", "TOML syntax", id="syntax-header"),
    pytest.param("[read_burst]\nthreshold = 20\n[read_burst]\nthreshold = 21\n", 3, "rules.read_burst",
                 "TOML syntax", id="syntax-duplicate-table"),
    pytest.param("\n[read_bust]\nthreshold = 2\n", 2, "rules.read_bust", "did you mean 'read_burst'", id="unknown-rule"),
    pytest.param("first_acces.learning_days = 3\n", 1, "rules.first_acces", "did you mean 'first_access'",
                 id="unknown-rule-dotted"),
    pytest.param("threshold = 3\n", 1, "rules.threshold", "unknown rule", id="top-level-key"),
    pytest.param("[read_burst]\nthreshold = 20\nthreshhold = 2\n", 3, "rules.read_burst.threshhold",
                 "did you mean 'threshold'", id="unknown-key"),
    pytest.param('[after_hours.users."u1042"]\nstart = "10:00"\nstop = "22:00"\n', 3,
                 "rules.after_hours.users.u1042.stop", "unknown key 'stop'", id="unknown-key-quoted-table"),
    pytest.param('[read_burst]\nthreshold = "20"\n', 2, "rules.read_burst.threshold", "expected an integer",
                 id="wrong-type-string"),
    pytest.param("[read_burst]\nwindow_minutes = 5\nenabled = 1\n", 3, "rules.read_burst.enabled",
                 "expected true or false", id="wrong-type-bool"),
    pytest.param("read_burst = 3\n", 1, "rules.read_burst", "expected a table", id="wrong-type-table"),
    pytest.param("[sensitive_copy_out]\nsync_folders = \"*/Nutstore/*\"\n", 2, "rules.sensitive_copy_out.sync_folders",
                 "expected an array", id="wrong-type-array"),
    pytest.param("[read_burst]\nwindow_minutes = 1979-05-27\n", 2, "rules.read_burst.window_minutes", "date",
                 id="wrong-type-date"),
    pytest.param("[read_burst]\nwindow_minutes = inf\n", 2, "rules.read_burst.window_minutes", "finite",
                 id="infinite"),
    pytest.param("[read_burst]\n\nthreshold = -3\n", 3, "rules.read_burst.threshold", "negative or zero",
                 id="negative-threshold"),
    pytest.param("[read_burst]\nthreshold = 0\n", 2, "rules.read_burst.threshold", "every read would be a burst",
                 id="zero-threshold"),
    pytest.param("[bulk_read]\nfloor_per_hour = 0\n", 2, "rules.bulk_read.floor_per_hour", "negative or zero",
                 id="zero-floor"),
    pytest.param("[read_burst]\nwindow_minutes = 0\n", 2, "rules.read_burst.window_minutes", "negative or zero",
                 id="zero-window"),
    pytest.param('[read_burst]\nseverity = "urgent"\n', 2, "rules.read_burst.severity", "low, medium, high, critical",
                 id="severity"),
    pytest.param("[bulk_read]\nfloor_per_hour = 1\nsigmas = 0.5\n", 2, "rules.bulk_read.floor_per_hour", "sigmas",
                 id="bulk-read-every-hour"),
    pytest.param("[bulk_read]\nfloor_per_hour = 1\ncold_start_factor = 1.5\n", 2, "rules.bulk_read.floor_per_hour",
                 "every new user", id="bulk-read-cold-start-every-hour"),
    pytest.param('\n[sensitive_copy_out]\nsync_folders = [\n  "*/Nutstore/*",\n  "/*",\n]\n', 5,
                 "rules.sensitive_copy_out.sync_folders[1]", "matches every path", id="sync-slash-star"),
    pytest.param('[sensitive_copy_out]\nsync_folders = ["*"]\n', 2, "rules.sensitive_copy_out.sync_folders[0]",
                 "matches every path", id="sync-star"),
    pytest.param('[sensitive_copy_out]\nsync_folders = ["*/Dropbox/*", "**"]\n', 2,
                 "rules.sensitive_copy_out.sync_folders[1]", "matches every path", id="sync-double-star"),
    pytest.param('[sensitive_copy_out]\nsync_folders = ["*/*"]\n', 2, "rules.sensitive_copy_out.sync_folders[0]",
                 "matches every path", id="sync-star-slash-star"),
    pytest.param('[after_hours]\nhours = { start = "19:00", end = "19:00" }\n', 2, "rules.after_hours.hours",
                 "zero length", id="zero-length-day"),
    pytest.param('[after_hours.users."u1"]\nstart = "10:00"\nend = "10:30"\n', 1, "rules.after_hours.users.u1",
                 "under an hour", id="short-user-day"),
    pytest.param('[after_hours]\nusers = { u1 = { start = "10:00", end = "25:00" } }\n', 2,
                 "rules.after_hours.users.u1.end", "HH:MM", id="bad-time-inline"),
    pytest.param('[after_hours]\n\ntimezone = "Asia/Shangha"\n', 3, "rules.after_hours.timezone", "unknown time zone",
                 id="time-zone"),
    pytest.param('[after_hours]\nuser_departments = { u1 = "finanse" }\n[after_hours.departments.finance]\n'
                 'start = "09:00"\nend = "18:00"\n', 2, "rules.after_hours.user_departments.u1",
                 "did you mean 'finance'", id="department-without-hours"),
    pytest.param("[first_access]\nfolder_depth = 1\n", 2, "rules.first_access.folder_depth", '"/"',
                 id="folder-depth-1"),
    pytest.param("[first_access]\nlearning_days = 0\n", 2, "rules.first_access.learning_days", "first day",
                 id="no-learning"),
    pytest.param("[first_access]\nfolder_depth = 3\nmax_folders_per_user = 1000000\n", 3,
                 "rules.first_access.max_folders_per_user", "without bound", id="unbounded-folders"),
    pytest.param("[bulk_read]\nbaseline_days = 3650\n", 2, "rules.bulk_read.baseline_days", "without bound",
                 id="unbounded-baseline"),
]


@pytest.mark.parametrize(("text", "line", "key", "words"), CASES)
def test_each_mistake_names_its_line_and_key(text: str, line: int, key: str, words: str) -> None:
    err = refused(text)
    assert (err.line, err.key) == (line, key), str(err)
    assert words in err.message
    assert str(err).startswith(f"rules.toml:{line}: {key}: ")


def test_every_problem_is_listed_in_line_order() -> None:
    err = refused("[read_burst]\nthreshold = 0\n[first_access]\nfolder_dept = 3\n[bulk_read]\nsigmas = -1\n")
    assert [(p.line, p.key) for p in err.problems] == [
        (2, "rules.read_burst.threshold"), (4, "rules.first_access.folder_dept"), (6, "rules.bulk_read.sigmas")]
    assert err.render().count("\n") == 2
    assert (err.line, err.key) == (2, "rules.read_burst.threshold")


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing set\n", "\ufeff"])
def test_an_empty_file_is_the_defaults(text: str) -> None:
    assert parse_rules(text) == RuleSet()


def test_the_example_of_the_brief_reads_as_written() -> None:
    rules = parse_rules(BRIEF_EXAMPLE)
    assert rules.read_burst.threshold == 20 and rules.read_burst.window_minutes == 5
    assert rules.after_hours.users == {"u1042": WorkingHours(start="10:00", end="22:00")}
    assert rules.sensitive_copy_out.sync_folders == ("*/Nutstore/*", "*/OneDrive/*")
    assert rules.bulk_read == RuleSet().bulk_read
    assert "6 of 6 rules on" in summarize(rules)


def test_the_example_file_is_the_defaults_and_names_every_key() -> None:
    assert load_rules(EXAMPLE) == RuleSet()
    text = EXAMPLE.read_text(encoding="utf-8")
    for name in RULE_NAMES:
        assert f"[{name}]" in text
        for key in type(getattr(RuleSet(), name)).model_fields:
            assert re.search(rf"^#? ?{key} =|^\[{name}\.{key}\]", text, re.M), f"{name}.{key} is not documented"


def test_a_missing_file_is_an_error_without_a_line(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path / "nope.toml")
    assert info.value.line is None and "cannot read" in str(info.value)


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(b"[read_burst]\nthreshold = 20 # \xff\n")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert info.value.line == 2


def test_the_holiday_file_is_read_at_load_from_the_rules_folder(tmp_path: Path) -> None:
    (tmp_path / "holidays.json").write_text(json.dumps({"2027-01-01": "holiday", "2027-02-07": "workday"}))
    path = tmp_path / "rules.toml"
    path.write_text('[after_hours]\nholiday_file = "holidays.json"\n')
    rules = load_rules(path)
    assert rules.after_hours.holiday_file == str((tmp_path / "holidays.json").resolve())
    calendar = working_calendar(rules.after_hours)
    assert calendar.day(__import__("datetime").date(2027, 2, 7)).working

    path.write_text('[after_hours]\nmin_events = 5\nholiday_file = "missing.json"\n')
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert (info.value.line, info.value.key) == (3, "rules.after_hours.holiday_file")

    (tmp_path / "bad.json").write_text('{"2027-13-01": "holiday"}')
    path.write_text('[after_hours]\nholiday_file = "bad.json"\n')
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert info.value.line == 2 and "not a date" in info.value.message


def test_reload_keeps_the_last_good_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[read_burst]\nthreshold = 30\n")
    built = build_services(CollectorSettings(data_dir=tmp_path / "data", insecure_dev=True,
                                             grpc_listen="127.0.0.1:0", rules_file=path))
    try:
        assert built.rules.read_burst.threshold == 30
        path.write_text("[read_burst]\nthreshold = 0\n")
        failed = reload_rules(built)
        assert isinstance(failed, RulesError) and failed.line == 2
        assert built.rules.read_burst.threshold == 30
        path.write_text("[read_burst]\nthreshold = 40\n")
        assert reload_rules(built) == built.rules
        assert built.rules.read_burst.threshold == 40
    finally:
        built.store.close()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "collector", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_rules_check_exits_0_with_a_summary_and_2_naming_the_line(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(BRIEF_EXAMPLE)
    done = _cli("rules", "check", str(good), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "read_burst >20 reads/5 min" in done.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text("[read_burst]\nthreshold = 20\n\n[bulk_reed]\nfloor_per_hour = 3\n")
    done = _cli("rules", "check", str(bad), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"{bad}:4: rules.bulk_reed: unknown rule 'bulk_reed'; did you mean 'bulk_read'?")
    assert done.stdout == ""

    assert _cli("rules", "check", str(tmp_path / "missing.toml"), cwd=tmp_path).returncode == 2


def test_serve_with_a_bad_rules_file_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[sensitive_copy_out]\nsync_folders = ["*"]\n')
    data = tmp_path / "data"
    done = _cli("serve", "--data-dir", str(data), "--insecure-dev", "--grpc-listen", "127.0.0.1:0",
                "--http-listen", "127.0.0.1:0", "--rules", str(bad), cwd=tmp_path)
    assert done.returncode == 2
    assert f"{bad}:2: rules.sensitive_copy_out.sync_folders[0]: " in done.stderr
    assert "serving" not in done.stdout
    assert not (data / "collector.addr.json").exists() and not (data / "collector.db").exists()


@pytest.mark.slow
def test_sighup_reloads_and_a_bad_reload_keeps_serving(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[read_burst]\nthreshold = 30\n")
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "collector", "serve", "--data-dir", str(data), "--insecure-dev",
                             "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--rules", str(rules)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (data / "collector.addr.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        rules.write_text("[read_burst]\nthreshold = 0\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        rules.write_text("[read_burst]\nthreshold = 40\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None  # still serving after a bad reload
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert f"rules reload failed, keeping the last good rules: {rules}:2: rules.read_burst.threshold" in stderr
    assert "rules reloaded" in stderr and "read_burst >40 reads" in stderr
