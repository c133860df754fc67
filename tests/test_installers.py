"""The installers say what the code accepts: unit files, the example policy, the install script."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.__main__ import _parser as agent_parser
from agent.policy import load_policy
from collector.__main__ import _parser as collector_parser

LINUX = Path(__file__).resolve().parents[1] / "installers" / "linux"


def _exec_start(unit: str) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(LINUX / unit)
    return shlex.split(parser["Service"]["ExecStart"])


@pytest.mark.parametrize("unit,cli", [("shoumi-agent.service", agent_parser), ("shoumi-collector.service", collector_parser)])
def test_unit_files_start_commands_the_cli_accepts(unit: str, cli: object) -> None:
    argv = _exec_start(unit)
    assert Path(argv[0]).name in ("shoumi-agent", "shoumi-collector")
    args = cli().parse_args(argv[1:])  # type: ignore[operator]
    assert args.command in ("run", "serve")


def test_unit_files_pass_systemd_verification() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (a machine facility)")
    for unit in ("shoumi-agent.service", "shoumi-collector.service"):
        done = subprocess.run(["systemd-analyze", "verify", str(LINUX / unit)], capture_output=True, text=True, timeout=60)
        problems = [line for line in (done.stdout + done.stderr).splitlines()
                    if line.strip() and "is not executable" not in line]  # /opt/shoumi is not installed here
        assert problems == [], problems


def test_example_policy_is_a_valid_policy() -> None:
    policy = load_policy(LINUX / "agent.toml.example")
    assert policy.sensitive_folders == ("/srv/finance", "/home/*/Contracts")
    assert policy.partial_match_share == 0.5


def test_install_script_refuses_missing_arguments() -> None:
    done = subprocess.run(["bash", str(LINUX / "install-agent.sh"), "--collector", "c:7444"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "--ca-fingerprint are required" in done.stderr
