"""How long from a file operation in a watched folder to the event stored by the collector.

Starts a real collector and agent (the CLI processes), creates N files at a steady rate in the
watched folder, and reads from the collector's SQLite store when the batch holding each file.create
was received. Prints the figures and one JSON line; the limit from issue 2 is 1 s.

    python bench/latency.py [--files 300] [--rate 50]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import enroll_agent, start_agent, start_collector, stop_all  # noqa: E402

LIMIT_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="files per second")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="shoumi-latency-"))
    cdir, adir, watch = root / "collector", root / "agent", root / "watch"
    watch.mkdir(parents=True)
    collector, addr = start_collector(cdir, root / "collector.log")
    agent = None
    try:
        enroll_agent(cdir, addr, adir)
        agent = start_agent(adir, root / "agent.log", "--watch", str(watch))
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
        stop_all(agent, collector)
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
