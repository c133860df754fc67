"""A bounded burst in a sensitive folder, captured by the agent and, in the same run, by the raw
references `inotifywait -m -r` (inotify-tools) and `fatrace` (fanotify): who saw how much?

For each filesystem (a tmpfs mounted for the run under /var/tmp, as the policy refuses /dev/shm;
then disk under /var/tmp) it writes N files and reads each back once, with the agent
(`shoumi-agent run --watch DIR`, no collector: events stay in its spool, which is counted
afterwards), inotifywait and fatrace all running. Expected per tool: N writes and N reads
(the agent: file.write + file.read; inotifywait: CLOSE_WRITE + CLOSE_NOWRITE; fatrace: W and R/C
records of files in DIR). Prints events/s (events seen / (burst time + time to drain)), lost, CPU
seconds and peak RSS (psutil), then one JSON line.

    python bench/capture.py [--files 20000] [--capture auto|fanotify|inotify] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

from shoumi.v1 import events_pb2  # noqa: E402

from agent.identity import AgentState, save_state  # noqa: E402

BIN = Path(sys.executable).parent


class Watched:
    """A process whose CPU time and peak RSS are sampled until it stops."""

    def __init__(self, name: str, args: list[str], out: Path) -> None:
        self.name = name
        self.out = out
        with open(out, "wb") as f:
            self.proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = 0
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)
                t = self.ps.cpu_times()
                self.cpu = t.user + t.system
            except psutil.Error:
                return

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM if self.name == "agent" else signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stop.set()
        self._thread.join()


def _spool_counts(spool: Path, folder: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    db = sqlite3.connect(spool)
    try:
        raws = [r[0] for r in db.execute("SELECT data FROM events")]
        for (data,) in db.execute("SELECT data FROM batches"):
            batch = events_pb2.EventBatch.FromString(data)
            raws += [e.SerializeToString() for e in batch.events]
    finally:
        db.close()
    for raw in raws:
        event = events_pb2.Event.FromString(raw)
        if event.path.startswith(folder):
            counts[event.kind] = counts.get(event.kind, 0) + 1
    return counts


def _quiet(check: Any, timeout: float) -> float:
    """Waits until check() stops growing (or timeout); returns when it last grew."""
    last, last_change, deadline = check(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = check()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > 3:
            break
    return last_change


def one_run(base: Path, files: int, capture: str) -> dict[str, dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="shoumi-bench-", dir=base))
    state = Path(tempfile.mkdtemp(prefix="shoumi-bench-state-"))
    folder = work / "finance"
    folder.mkdir()
    try:
        try:  # no collector: events stay in the spool; plaintext so no certificates are needed
            bench_state = AgentState("agt-bench", "127.0.0.1:9", "bench", tls=False)  # type: ignore[call-arg]
        except TypeError:  # before mTLS
            bench_state = AgentState("agt-bench", "127.0.0.1:9", "bench")
        save_state(state, bench_state)
        procs = [
            Watched("agent", [str(BIN / "shoumi-agent"), "run", "--state-dir", str(state), "--watch", str(folder),
                              "--capture", capture, "--attributed-user", "root", "--heartbeat-seconds", "5"],
                    state / "agent.log"),
            Watched("inotifywait", ["inotifywait", "-m", "-r", "-q", "-e", "close_write,close_nowrite", str(folder)],
                    work / "inotifywait.out"),
            Watched("fatrace", ["fatrace", "-f", "RWC"], work / "fatrace.out"),
        ]
        log = state / "agent.log"
        deadline = time.monotonic() + 30
        while b"watching" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        payload = os.urandom(512)
        started = time.monotonic()
        for i in range(files):
            with open(folder / f"f{i:06d}.txt", "wb") as f:
                f.write(payload)
        for i in range(files):
            with open(folder / f"f{i:06d}.txt", "rb") as f:
                f.read()
        burst_s = time.monotonic() - started
        spool = state / "spool.db"

        def agent_seen() -> int:
            try:
                return int(json.loads(subprocess.run(
                    [sys.executable, "-c", "import sqlite3,sys;db=sqlite3.connect(sys.argv[1]);"
                     "print(max(db.execute('SELECT coalesce(max(seq),0) FROM events').fetchone()[0],"
                     "db.execute('SELECT coalesce(max(last_seq),0) FROM batches').fetchone()[0]));db.close()", str(spool)],
                    capture_output=True, text=True, timeout=10).stdout or "0"))
            except ValueError:
                return 0

        ends = {"agent": _quiet(agent_seen, 120),
                "inotifywait": _quiet(lambda: (work / "inotifywait.out").stat().st_size, 60),
                "fatrace": _quiet(lambda: (work / "fatrace.out").stat().st_size, 60)}
        for p in procs:
            p.stop()
        counts = _spool_counts(spool, str(folder))
        seen = {"agent": counts.get("file.write", 0) + counts.get("file.read", 0)}
        with open(work / "inotifywait.out", "rb") as f:
            lines = f.read().splitlines()
        seen["inotifywait"] = sum(1 for line in lines if b"CLOSE" in line and not line.endswith(b"/"))
        with open(work / "fatrace.out", "rb") as f:
            fat = [line for line in f.read().splitlines() if str(folder).encode() + b"/f" in line]
        seen["fatrace"] = sum(1 for line in fat if b": W" in line or b"CW" in line) + sum(
            1 for line in fat if b"): C" in line or b": RC" in line or b"RC " in line)
        expected = 2 * files
        out: dict[str, dict[str, float]] = {}
        for p in procs:
            elapsed = max(ends[p.name] - started, burst_s)
            out[p.name] = {"events": seen[p.name], "events_per_s": round(seen[p.name] / elapsed),
                           "lost": max(0, expected - seen[p.name]), "cpu_s": round(p.cpu, 2),
                           "peak_rss_mb": round(p.peak_rss / 2**20, 1)}
        out["burst"] = {"files": files, "burst_s": round(burst_s, 2)}
        out["agent_kinds"] = dict(counts)  # type: ignore[assignment]
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def _tmpfs() -> Iterator[Path]:
    point = Path(tempfile.mkdtemp(prefix="shoumi-bench-tmpfs-", dir="/var/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)
        point.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--capture", default="auto", choices=["auto", "fanotify", "inotify"])
    args = parser.parse_args()
    for tool in ("inotifywait", "fatrace"):
        if shutil.which(tool) is None:
            print(f"{tool} missing: apt-get install inotify-tools fatrace", file=sys.stderr)
            return 2
    results = {}
    for label, base in (("tmpfs", None), ("disk", Path("/var/tmp"))):
        if base is None:
            # a tmpfs of its own: the policy refuses sensitive folders in /dev (so /dev/shm) and /run
            with _tmpfs() as mounted:
                r = one_run(mounted, args.files, args.capture)
        else:
            r = one_run(base, args.files, args.capture)
        results[label] = r
        print(f"== {label}: {r['burst']['files']} files written and read in {r['burst']['burst_s']} s")
        for name in ("agent", "inotifywait", "fatrace"):
            v = r[name]
            print(f"  {name:12s} events {v['events']:>7} {v['events_per_s']:>8}/s lost {v['lost']:>6} "
                  f"cpu {v['cpu_s']:>6} s peak rss {v['peak_rss_mb']:>6} MB")
        print(f"  agent kinds: {r['agent_kinds']}")
    agent_rate = min(results[k]["agent"]["events_per_s"] for k in results)
    ino_rate = min(results[k]["inotifywait"]["events_per_s"] for k in results)
    print(json.dumps({
        "agent_events_per_s": agent_rate, "inotifywait_events_per_s": ino_rate,
        "ratio": round(agent_rate / ino_rate, 3) if ino_rate else None,
        "lost": sum(results[k]["agent"]["lost"] for k in results),
        "agent_peak_rss_mb": max(results[k]["agent"]["peak_rss_mb"] for k in results),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
