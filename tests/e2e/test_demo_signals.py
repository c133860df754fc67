"""`make demo` stops everything it started, however it is stopped: Ctrl-C, SIGTERM, SIGHUP, or its own death."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGHUP", "SIGKILL"])
def test_demo_leaves_nothing_running(tmp_path: Path, how: str) -> None:
    ready = tmp_path / "ready.json"
    out = tmp_path / "demo.out"
    with open(out, "wb") as log:
        demo = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo.py"), "--data-dir", str(tmp_path / "demo"),
                                 "--stop-after", "alerts", "--ready-file", str(ready)], stdout=log, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: ready.exists() or demo.poll() is not None, timeout=120, what="the demo to be up")
        assert demo.poll() is None, out.read_text()
        pids = json.loads(ready.read_text())["pids"]
        assert set(pids) == {"collector", "agent", "payroll", "witness"}, pids
        assert all(_alive(pid) for pid in pids.values())
        demo.send_signal(getattr(signal, how))
        demo.wait(timeout=60)
        if how == "SIGHUP":
            assert "demo: SIGHUP: stopping everything it started" in out.read_text()
        # SIGKILL gives the demo no chance to clean up: the kernel's parent-death signal stops the children
        eventually(lambda: not any(_alive(pid) for pid in pids.values()), timeout=30, what="every child to stop")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
