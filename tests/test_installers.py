"""The installers say what the code accepts: unit files, the service wrapper, the example policy."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.__main__ import _parser as agent_parser
from agent.policy import load_policy
from collector.__main__ import _parser as collector_parser

LINUX = Path(__file__).resolve().parents[1] / "installers" / "linux"


def _service(unit: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(LINUX / unit)
    return parser["Service"]


def test_collector_unit_starts_a_command_the_cli_accepts() -> None:
    argv = shlex.split(_service("shoumi-collector.service")["ExecStart"])
    assert argv[0] == "/opt/shoumi-collector/bin/shoumi-collector"
    assert collector_parser().parse_args(argv[1:]).command == "serve"


def test_agent_unit_starts_the_service_wrapper() -> None:
    assert shlex.split(_service("shoumi-agent.service")["ExecStart"]) == ["/opt/shoumi-agent/bin/shoumi-agent-service", "run"]


def test_unit_files_pass_systemd_verification() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (a machine facility)")
    for unit in ("shoumi-agent.service", "shoumi-collector.service"):
        done = subprocess.run(["systemd-analyze", "verify", str(LINUX / unit)], capture_output=True, text=True, timeout=60)
        problems = [line for line in (done.stdout + done.stderr).splitlines()
                    if line.strip() and "is not executable" not in line]  # /opt/shoumi-* is not installed here
        assert problems == [], problems


@pytest.mark.parametrize("unit,most", [("shoumi-agent.service", 4.0), ("shoumi-collector.service", 2.0)])
def test_unit_hardening_exposure(unit: str, most: float) -> None:
    """systemd's own exposure score (0 safest, 10 unsafe); the README states the figures."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (a machine facility)")
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", str(LINUX / unit)],
                          capture_output=True, text=True, timeout=60)
    last = done.stdout.strip().splitlines()[-1]
    score = float(last.split("level for")[1].split(":")[1].split()[0])
    assert score <= most, last


def test_agent_unit_keeps_only_the_capabilities_capture_needs() -> None:
    service = _service("shoumi-agent.service")
    assert set(service["CapabilityBoundingSet"].split()) == {"CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE",
                                                             "CAP_NET_ADMIN"}
    assert service["ProtectSystem"] == "strict" and service["ProtectHome"] == "read-only"
    assert service["NoNewPrivileges"] == "yes"
    filters = [line.split("=", 1)[1] for line in (LINUX / "shoumi-agent.service").read_text().splitlines()
               if line.startswith("SystemCallFilter=")]
    assert filters[0].split() == ["@system-service", "fanotify_init", "fanotify_mark"] and filters[1].startswith("~@mount")


def _wrapper(tmp_path: Path, *, exit_code: int = 0) -> tuple[Path, Path, dict[str, str]]:
    """The service wrapper beside a stand-in shoumi-agent that records its arguments (a real process)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    shutil.copy(LINUX / "shoumi-agent-service", bin_dir / "shoumi-agent-service")
    calls = tmp_path / "calls.jsonl"
    fake = bin_dir / "shoumi-agent"
    fake.write_text(f'#!/usr/bin/env python3\nimport json, sys\nopen({str(calls)!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")\n'
                    f'sys.exit({exit_code})\n')
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "SHOUMI_AGENT_STATE_DIR": str(state), "SHOUMI_AGENT_CONFIG": "/etc/shoumi-agent/agent.toml",
           "SHOUMI_AGENT_RUN_DIR": str(tmp_path / "run")}
    return bin_dir / "shoumi-agent-service", calls, env


def test_wrapper_enrolls_from_the_packages_answers_then_runs(tmp_path: Path) -> None:
    wrapper, calls, env = _wrapper(tmp_path)
    state = Path(env["SHOUMI_AGENT_STATE_DIR"])
    (state / "enroll.env").write_text("SHOUMI_COLLECTOR=c.corp:7444\nSHOUMI_ENROLL_TOKEN=se_x$(touch /tmp/pwn)\n"
                                      "SHOUMI_CA_FINGERPRINT=ab12\n")
    (tmp_path / "run").mkdir()
    done = subprocess.run([str(wrapper), "run"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    enroll, run = (json.loads(line) for line in calls.read_text().splitlines())
    args = agent_parser().parse_args(enroll)
    assert (args.command, args.collector, args.token, args.ca_fingerprint) == ("enroll", "c.corp:7444", "se_x$(touch /tmp/pwn)", "ab12")
    assert agent_parser().parse_args(run).command == "run" and run[run.index("--state-dir") + 1] == str(state)
    assert not (state / "enroll.env").exists()  # spent: the token is not kept
    assert (tmp_path / "run" / "agent.pid").read_text().strip().isdigit()


def test_wrapper_keeps_the_answers_and_fails_when_enrollment_fails(tmp_path: Path) -> None:
    wrapper, calls, env = _wrapper(tmp_path, exit_code=2)
    state = Path(env["SHOUMI_AGENT_STATE_DIR"])
    (state / "enroll.env").write_text("SHOUMI_COLLECTOR=c.corp:7444\nSHOUMI_ENROLL_TOKEN=se_x\nSHOUMI_CA_FINGERPRINT=ab\n")
    done = subprocess.run([str(wrapper), "run"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "enrollment with c.corp:7444 failed" in done.stderr
    assert len(calls.read_text().splitlines()) == 1  # never ran the agent unenrolled
    assert (state / "enroll.env").exists() and not (state / "agent.json").exists()


def test_wrapper_without_identity_or_answers_says_how_to_enroll(tmp_path: Path) -> None:
    wrapper, calls, env = _wrapper(tmp_path)
    done = subprocess.run([str(wrapper), "run"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "SHOUMI_ENROLL_TOKEN" in done.stderr and not calls.exists()
    assert subprocess.run([str(wrapper), "bogus"], env=env, capture_output=True, timeout=30).returncode == 2


def test_example_policy_is_a_valid_policy() -> None:
    policy = load_policy(LINUX / "agent.toml.example")
    assert policy.sensitive_folders == ("/srv/finance", "/home/*/Contracts")
    assert policy.partial_match_share == 0.5


def test_maintainer_scripts_are_valid_sh() -> None:
    for script in sorted((LINUX / "deb").glob("*/*")):
        if script.name == "templates":
            continue
        assert os.access(script, os.X_OK), script
        done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)
