"""What the benchmarks share: a real collector and an enrolled agent as the CLI starts them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["BIN", "start_collector", "enroll_agent", "start_agent", "stop_all"]

BIN = Path(sys.executable).parent


def start_collector(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Starts `shoumi-collector serve` on free loopback ports; returns it and its addresses."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "shoumi-collector"), "serve", "--data-dir", str(data_dir),
                                 "--grpc-listen", "127.0.0.1:0", "--enroll-listen", "127.0.0.1:0",
                                 "--http-listen", "127.0.0.1:0"], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not (data_dir / "collector.addr.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the collector did not start; see {log}")
        time.sleep(0.05)
    return proc, json.loads((data_dir / "collector.addr.json").read_text())


def enroll_agent(data_dir: Path, addr: dict[str, str], state_dir: Path) -> None:
    """Enrolls an agent the way IT does: a one-time token and the pinned CA fingerprint."""
    token = subprocess.run([str(BIN / "shoumi-collector"), "enroll-token", "create", "--data-dir", str(data_dir)],
                           capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([str(BIN / "shoumi-agent"), "enroll", "--collector", addr["enroll"], "--token", token,
                    "--ca-fingerprint", addr["ca_fingerprint"], "--state-dir", str(state_dir)],
                   capture_output=True, check=True)


def start_agent(state_dir: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """Starts `shoumi-agent run` with the given arguments."""
    with open(log, "wb") as out:
        return subprocess.Popen([str(BIN / "shoumi-agent"), "run", "--state-dir", str(state_dir), *args],
                                stdout=out, stderr=subprocess.STDOUT)


def stop_all(*procs: subprocess.Popen[bytes] | None) -> None:
    """Stops the processes with SIGTERM, in order."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
