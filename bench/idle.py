"""The agent's resource use at idle: CPU share of one core and RSS over a quiet interval.

Starts a real collector and agent (fanotify as root, or --capture inotify), lets it settle, then
samples the agent process with psutil for --seconds while nothing happens in its folders. The
budget from issue 3: under 1% of one core and under 80 MB RSS.

    python bench/idle.py [--seconds 10] [--capture auto|fanotify|inotify]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from harness import enroll_agent, start_agent, start_collector, stop_all  # noqa: E402

CPU_LIMIT_PCT, RSS_LIMIT_MB = 1.0, 80.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--capture", default="auto", choices=["auto", "fanotify", "inotify"])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="shoumi-idle-"))
    cdir, adir, watch = root / "collector", root / "agent", root / "finance"
    watch.mkdir(parents=True)
    for i in range(200):
        (watch / f"doc-{i}.txt").write_text(f"confidential {i}\n" * 100)
    collector, addr = start_collector(cdir, root / "collector.log")
    agent = None
    try:
        enroll_agent(cdir, addr, adir)
        agent = start_agent(adir, root / "agent.log", "--watch", str(watch), "--capture", args.capture)
        proc = psutil.Process(agent.pid)
        time.sleep(4.0)  # start-up: indexing the folder, first heartbeat
        before = proc.cpu_times()
        t0 = time.monotonic()
        peak_rss = 0.0
        while time.monotonic() - t0 < args.seconds:
            peak_rss = max(peak_rss, proc.memory_info().rss / 2**20)
            time.sleep(0.2)
        after = proc.cpu_times()
        elapsed = time.monotonic() - t0
    finally:
        stop_all(agent, collector)
    cpu_pct = 100 * ((after.user - before.user) + (after.system - before.system)) / elapsed
    print(f"agent idle over {elapsed:.1f} s ({args.capture}): CPU {cpu_pct:.2f}% of one core (limit {CPU_LIMIT_PCT}%), "
          f"peak RSS {peak_rss:.1f} MB (limit {RSS_LIMIT_MB:.0f} MB)")
    print(json.dumps({"capture": args.capture, "idle_cpu_pct": round(cpu_pct, 3), "peak_rss_mb": round(peak_rss, 1),
                      "cpu_limit_pct": CPU_LIMIT_PCT, "rss_limit_mb": RSS_LIMIT_MB,
                      "within_limits": cpu_pct < CPU_LIMIT_PCT and peak_rss < RSS_LIMIT_MB}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
