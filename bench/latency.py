"""How long from a file operation in a watched folder to the event stored by the collector.

Starts a real collector and agent (the CLI processes), creates N files at a steady rate in the
watched folder, and reads from the collector's SQLite store when the batch holding each file.create
was received. Prints the figures and one JSON line; the limit from issue 2 is 1 s.

    python bench/latency.py [--files 300] [--rate 50]
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
LIMIT_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="files per second")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="shoumi-latency-"))
    cdir, adir, watch = root / "collector", root / "agent", root / "watch"
    watch.mkdir(parents=True)
    with open(root / "collector.log", "wb") as log:
        collector = subprocess.Popen([str(BIN / "shoumi-collector"), "serve", "--data-dir", str(cdir),
                                      "--grpc-listen", "127.0.0.1:0", "--enroll-listen", "127.0.0.1:0",
                                      "--http-listen", "127.0.0.1:0"],
                                     stdout=log, stderr=subprocess.STDOUT)
    agent = None
    try:
        while not (cdir / "collector.addr.json").exists():
            time.sleep(0.05)
        addr = json.loads((cdir / "collector.addr.json").read_text())
        token = subprocess.run([str(BIN / "shoumi-collector"), "enroll-token", "create", "--data-dir", str(cdir)],
                               capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run([str(BIN / "shoumi-agent"), "enroll", "--collector", addr["enroll"], "--token", token,
                        "--ca-fingerprint", addr["ca_fingerprint"], "--state-dir", str(adir)], capture_output=True, check=True)
        with open(root / "agent.log", "wb") as log:
            agent = subprocess.Popen([str(BIN / "shoumi-agent"), "run", "--state-dir", str(adir), "--watch", str(watch)],
                                     stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1.5)
        written: dict[str, int] = {}
        start = time.monotonic()
        for i in range(args.files):
            path = watch / f"f{i:05d}"
            written[str(path)] = time.time_ns()
            path.write_bytes(b"x")
            time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
        db = sqlite3.connect(f"file:{cdir / 'collector.db'}?mode=ro", uri=True)
        deadline = time.monotonic() + 30
        rows: list[tuple[str, int]] = []
        while time.monotonic() < deadline:
            rows = db.execute(
                "SELECT e.path, b.received_at_ns FROM events e JOIN batches b ON b.agent_id = e.agent_id "
                "AND b.epoch = e.epoch AND e.seq BETWEEN b.first_seq AND b.last_seq WHERE e.kind = 'file.create'"
            ).fetchall()
            if len(rows) >= args.files:
                break
            time.sleep(0.2)
        lat = sorted((received - written[path]) / 1e9 for path, received in rows if path in written)
    finally:
        for proc in (agent, collector):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
    lost = args.files - len(lat)
    p50 = statistics.median(lat) if lat else float("nan")
    p99 = lat[int(len(lat) * 0.99) - 1] if lat else float("nan")
    worst = lat[-1] if lat else float("nan")
    print(f"files created: {args.files} at {args.rate:g}/s; stored: {len(lat)}; lost: {lost}")
    print(f"create -> stored latency: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms "
          f"(limit {LIMIT_S * 1000:.0f} ms)")
    print(json.dumps({"files": args.files, "lost": lost, "p50_ms": round(p50 * 1000, 1), "p99_ms": round(p99 * 1000, 1),
                      "max_ms": round(worst * 1000, 1), "limit_ms": LIMIT_S * 1000, "within_limit": worst <= LIMIT_S}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
