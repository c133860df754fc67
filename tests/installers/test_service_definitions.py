"""The Windows and macOS service definitions: generated from one description, committed as generated,
and starting the command line the agent accepts."""

from __future__ import annotations

import importlib.util
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.__main__ import _parser as agent_parser

INSTALLERS = Path(__file__).resolve().parents[2] / "installers"
_spec = importlib.util.spec_from_file_location("service_definitions", INSTALLERS / "service_definitions.py")
assert _spec and _spec.loader
defs = importlib.util.module_from_spec(_spec)
sys.modules["service_definitions"] = defs
_spec.loader.exec_module(defs)


def _split_windows(command_line: str) -> list[str]:
    """CommandLineToArgvW's rules, as the Windows service manager applies them to binPath."""
    args, current, in_quotes, backslashes, has = [], [], False, 0, False
    for ch in command_line:
        if ch == "\\":
            backslashes += 1
            continue
        if ch == '"':
            current.append("\\" * (backslashes // 2))
            if backslashes % 2:
                current.append('"')
            else:
                in_quotes = not in_quotes
            backslashes, has = 0, True
            continue
        current.append("\\" * backslashes)
        backslashes = 0
        if ch in " \t" and not in_quotes:
            if current != [""] * len(current) or has:
                args.append("".join(current))
            current, has = [], False
        else:
            current.append(ch)
            has = True
    current.append("\\" * backslashes)
    if has or "".join(current):
        args.append("".join(current))
    return args


def test_committed_definitions_are_the_generated_ones() -> None:
    assert defs.main(["--check"]) == 0


def test_launchd_daemon_runs_the_agent_as_root_kept_alive() -> None:
    plist = plistlib.loads((INSTALLERS / "macos" / "com.shoumi.agent.plist").read_bytes())
    assert plist["Label"] == "com.shoumi.agent" and plist["UserName"] == "root"
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    args = agent_parser().parse_args(plist["ProgramArguments"][1:])
    assert args.command == "run" and args.state_dir == defs.MACOS.state_dir and args.config == defs.MACOS.config


def test_windows_service_command_line_round_trips_through_the_windows_rules() -> None:
    service = defs.windows_service()
    argv = _split_windows(str(service["binary_path"]))
    assert argv == defs.run_arguments(defs.WINDOWS)  # paths with spaces stay one argument each
    args = agent_parser().parse_args(argv[1:])
    assert args.command == "run" and args.state_dir == r"C:\ProgramData\Shoumi Agent\state"
    assert service["start"] == "auto" and service["failure_actions"].startswith("restart/")


@pytest.mark.parametrize("argument", ["plain", "with space", 'quote"inside', "trailing\\", "sp ace\\", "a\\\\b", ""])
def test_windows_quoting_round_trips(argument: str) -> None:
    assert _split_windows(defs._windows_quote(argument) + " next") == [argument, "next"]


def test_enroll_arguments_refuse_what_no_token_holds() -> None:
    argv = defs.enroll_arguments(defs.WINDOWS, collector="c.corp:7444", token="se_abc", ca_fingerprint="ab12")
    assert agent_parser().parse_args(argv[1:]).token == "se_abc"
    for bad in ({"collector": "c.corp"}, {"token": "se_a;calc"}, {"ca_fingerprint": ""}, {"token": "se\nx"}):
        given = {"collector": "c.corp:7444", "token": "se_abc", "ca_fingerprint": "ab12", **bad}
        with pytest.raises(ValueError):
            defs.enroll_arguments(defs.WINDOWS, **given)


def test_powershell_literals_are_escaped() -> None:
    text = (INSTALLERS / "windows" / "service-definition.ps1").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("$") and "= '" in line:
            literal = line.split("= ", 1)[1]
            assert literal.startswith("'") and literal.endswith("'") and "'" not in literal[1:-1].replace("''", ""), line


def test_macos_scripts_are_valid_sh() -> None:
    for script in (INSTALLERS / "macos" / "scripts").iterdir():
        assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0, script


def test_compose_file_is_valid_and_keeps_the_collector_unprivileged() -> None:
    compose = yaml.safe_load((INSTALLERS / "compose.yaml").read_text())
    assert set(compose["services"]) == {"postgres", "collector"}
    collector = compose["services"]["collector"]
    assert collector["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert collector["cap_drop"] == ["ALL"] and collector["read_only"] is True
    assert (INSTALLERS / collector["build"]["dockerfile"].removeprefix("installers/")).exists()
    assert collector["command"][0] == "serve"
    from collector.__main__ import _parser as collector_parser

    assert collector_parser().parse_args(collector["command"]).command == "serve"
