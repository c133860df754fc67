"""Fixtures of the payroll bridge's tests: the real CLI as a subprocess, JSON files in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

_BIN = Path(sys.executable).with_name("shoumi-payroll")


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


Cli = Callable[..., CliResult]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Runs `shoumi-payroll ARGS...` in a subprocess, with a clean SHOUMI_PAYROLL_ environment."""

    def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> CliResult:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SHOUMI_PAYROLL_")}
        base.update(env or {})
        cmd = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "payroll_bridge"]
        proc = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, env=base, cwd=tmp_path, input=stdin, timeout=120
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[[str, Any], Path]:
    def write(name: str, doc: Any) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        return path

    return write


def issue_example() -> dict[str, Any]:
    """The INPUT.json of issue 5, verbatim."""
    return {
        "employee_id": "E1001",
        "region": "CN-SH",
        "cases": [{"case_id": "C-7", "confirmed_at": "2026-11-20", "loss_fen": 500000, "paused": False}],
        "periods": [{"period": "2026-12", "wage_fen": 800000, "excluded_items_fen": 0,
                     "social_insurance_fen": 84000, "housing_fund_fen": 56000}],
        "minimum_wage_fen": 274000,
        "minimum_wage_excludes_contributions": True,
        "employment_ends": "2027-03",
    }


@pytest.fixture
def example() -> dict[str, Any]:
    return issue_example()
