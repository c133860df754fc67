"""What a user feels of the agent: the same work on a sensitive folder, agent off and on, alternating.

A sensitive folder of N files (4-64 KB, random) on disk (/var/tmp) and, per round, with the agent
off and then on (`shoumi-agent run --config`, as root: fanotify; no collector, events stay in its
spool), each of:

* `cp -r` of the folder into a watched destination, and into an unwatched folder,
* `tar cf - FOLDER | cat > /dev/null` (GNU tar writing to /dev/null itself opens no file at all),
* `grep -r` through it,
* a Python loop writing N new files into it (removed again after the round).

Prints each wall time, the median slowdown per task (on / off), the agent's CPU seconds and peak RSS
during the work, and the chunker's and SHA-256's speed on the same bytes in this process; ends with
one JSON line {"cp_ratio", "tar_ratio", "grep_ratio", "write_ratio", "agent_cpu_s",
"agent_peak_rss_mb", "chunker_mb_per_s", "sha256_mb_per_s"}. Goals (issue 13): every ratio <= 1.5,
chunker >= 1/3 of SHA-256, peak RSS < 80 MB.

    python bench/overhead.py [--files 5000] [--rounds 3] [--py-spy FILE] [--keep]

``--py-spy FILE`` records the agent with py-spy during the first round's work (raw collapsed stacks
in FILE) and prints where its time went.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

from agent.core.fingerprint import Chunker  # noqa: E402
from agent.identity import AgentState, save_state  # noqa: E402

BIN = Path(sys.executable).parent
WRITER = """
import os, sys
folder, n = sys.argv[1], int(sys.argv[2])
os.mkdir(folder)
block = os.urandom(16384)
for i in range(n):
    with open(os.path.join(folder, f"w{i:05d}.txt"), "wb") as f:
        f.write(block[: 512 + (i * 37) % 8000])
"""


class Sampler:
    """The agent's CPU seconds and peak RSS, sampled every 50 ms while armed."""

    def __init__(self, pid: int) -> None:
        self.ps = psutil.Process(pid)
        self.peak_rss = 0
        self.armed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            if self.armed:
                try:
                    self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)
                except psutil.Error:
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def make_folder(folder: Path, files: int) -> None:
    rng = random.Random(2026)
    folder.mkdir(parents=True)
    for i in range(files):
        sub = folder / f"d{i // 500:02d}"
        sub.mkdir(exist_ok=True)
        size = rng.randint(4 * 1024, 64 * 1024)
        text = f"Contract {i}: confidential terms for client {rng.randint(1, 10**6)}\n".encode()
        (sub / f"doc{i:05d}.txt").write_bytes(text + rng.randbytes(size - len(text)))


USER_CPU: list[float] = []  # CPU seconds (user + system) of each task's own processes, in order


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str] | str) -> float:
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run(argv, shell=isinstance(argv, str), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    USER_CPU.append(_children_cpu() - cpu)  # robust to load, unlike the wall time
    return seconds


def settle(sampler: Sampler | None, timeout: float = 120.0) -> None:
    """Waits until the agent has caught up (under 3 % of a core over half a second)."""
    if sampler is None:
        time.sleep(0.5)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sampler.cpu()
        time.sleep(0.5)
        if sampler.cpu() - before < 0.015:
            return


def tasks(folder: Path, dest: Path, plain: Path, files: int, tag: str) -> dict[str, Callable[[], float]]:
    return {
        "cp": lambda: timed(["cp", "-r", str(folder), str(dest / f"copy-{tag}")]),
        "cp_unwatched": lambda: timed(["cp", "-r", str(folder), str(plain / f"copy-{tag}")]),
        "tar": lambda: timed(f"tar cf - -C {folder.parent} {folder.name} | cat > /dev/null"),
        "grep": lambda: timed(f"grep -r 'no such phrase anywhere' {folder} > /dev/null; true"),
        "write": lambda: timed([sys.executable, "-c", WRITER, str(folder / f"new-{tag}"), str(files)]),
    }


def clean(folder: Path, dest: Path, plain: Path, tag: str) -> None:
    for path in (dest / f"copy-{tag}", plain / f"copy-{tag}", folder / f"new-{tag}"):
        shutil.rmtree(path, ignore_errors=True)


def start_agent(state: Path, config: Path, log: Path) -> tuple[subprocess.Popen[bytes], Sampler]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(BIN / "shoumi-agent"), "run", "--state-dir", str(state), "--config", str(config),
                                 "--heartbeat-seconds", "5"], stdout=out, stderr=subprocess.STDOUT)
    spool = state / "spool.db"
    started = time.monotonic()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # indexed: the first baseline (or catch-up) is stored
        time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit(f"agent exited: {log.read_text()[-2000:]}")
        try:
            db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'snapshot_baseline'").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            continue
        if row and int(row[0]) == 1:
            break
    print(f"agent started and indexed in {time.monotonic() - started:.2f} s", flush=True)
    sampler = Sampler(proc.pid)
    settle(sampler)
    return proc, sampler


def stop_agent(proc: subprocess.Popen[bytes], sampler: Sampler) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    sampler.close()


def speeds(size: int = 64 * 1024 * 1024) -> tuple[float, float]:
    data = os.urandom(size)
    view = memoryview(data)
    best_chunk = best_sha = 0.0
    for _ in range(3):
        started = time.perf_counter()
        chunker = Chunker()
        for i in range(0, size, 1 << 20):
            chunker.feed(view[i:i + (1 << 20)])
        chunker.finish()
        best_chunk = max(best_chunk, size / 1e6 / (time.perf_counter() - started))
        started = time.perf_counter()
        hashlib.sha256(data).digest()
        best_sha = max(best_sha, size / 1e6 / (time.perf_counter() - started))
    return best_chunk, best_sha


IDLE_LEAVES = ("wait ", "poll ", "select ", "_wait_for_tstate_lock", "sleep ", "get (queue", "read_events",
               "accept ", "recv ", "_run_once", "epoll")


def _frame(frame: str) -> str:
    name, _, rest = frame.partition(" (")
    return f"{name} ({rest.split('/')[-1].split(':')[0].rstrip(')')})"


def summarize_profile(raw: Path) -> None:
    """Prints where the sampled agent spent its busy time: inclusive share by function, idle
    samples (threads waiting on a lock, a queue or poll) left out."""
    inclusive: dict[str, int] = {}
    busy = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any(mark in frames[-1] for mark in IDLE_LEAVES):
            idle += count
            continue
        busy += count
        for name in {_frame(f) for f in frames[1:]}:  # the first frame names the thread
            inclusive[name] = inclusive.get(name, 0) + count
    print(f"py-spy: {busy} busy samples ({idle} idle left out); inclusive share of busy time (top 20):")
    for name, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {count / max(busy, 1):6.1%}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--py-spy", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--tasks", default="cp,cp_unwatched,tar,grep,write",
                        help="comma-separated subset of the tasks (the JSON names only the ones run)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the agent uses fanotify as root, as on a workstation")
    work = Path(tempfile.mkdtemp(prefix="shoumi-overhead-", dir="/var/tmp"))
    folder, dest, plain = work / "finance", work / "dest", work / "plain"
    dest.mkdir()
    plain.mkdir()
    state = work / "state"
    state.mkdir()
    save_state(state, AgentState("agt-overhead", "127.0.0.1:9", "bench", tls=False))
    config = work / "agent.toml"
    config.write_text(f'[policy]\nsensitive_folders = ["{folder}"]\ndestinations = ["{dest}"]\n')
    make_folder(folder, args.files)
    chunk_speed, sha_speed = speeds()
    print(f"chunker {chunk_speed:.0f} MB/s, SHA-256 {sha_speed:.0f} MB/s (64 MB, best of 3, this process)")
    wanted = args.tasks.split(",")
    times: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    user_cpu: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    agent_cpu: dict[str, list[float]] = {}  # agent CPU seconds per task (task and settling)
    cpu = 0.0
    peak = 0
    try:
        for name, task in tasks(folder, dest, plain, args.files, "warm").items():
            if name in wanted:
                task()  # page cache warm, binaries loaded
        clean(folder, dest, plain, "warm")
        for rnd in range(args.rounds):
            for mode in ("off", "on"):
                proc = sampler = None
                if mode == "on":
                    proc, sampler = start_agent(state, config, work / "agent.log")
                spy = None
                if mode == "on" and rnd == 0 and args.py_spy is not None and proc is not None:
                    # --nonblocking: py-spy must not pause the agent (that hid its CPU from the figures)
                    spy = subprocess.Popen([str(BIN / "py-spy"), "record", "-p", str(proc.pid), "-r", "200", "-f", "raw",
                                            "-o", str(args.py_spy), "--threads", "--nonblocking"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1.0)
                tag = f"{mode}{rnd}"
                if sampler is not None:
                    sampler.armed = True
                    cpu_before = sampler.cpu()
                for name, task in tasks(folder, dest, plain, args.files, tag).items():
                    if name not in wanted:
                        continue
                    task_cpu = sampler.cpu() if sampler is not None else 0.0
                    seconds = task()
                    settle(sampler)
                    times[mode].setdefault(name, []).append(seconds)
                    user_cpu[mode].setdefault(name, []).append(USER_CPU[-1])
                    note = ""
                    if sampler is not None:
                        spent = sampler.cpu() - task_cpu
                        agent_cpu.setdefault(name, []).append(spent)
                        note = f"  agent CPU {spent:6.3f} s"
                    print(f"round {rnd} agent {mode:3} {name:12} {seconds:7.3f} s  own CPU {USER_CPU[-1]:6.3f} s{note}",
                          flush=True)
                if sampler is not None and proc is not None:
                    cpu += sampler.cpu() - cpu_before
                    peak = max(peak, sampler.peak_rss)
                    sampler.armed = False
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
                clean(folder, dest, plain, tag)
                settle(sampler)
                if proc is not None and sampler is not None:
                    stop_agent(proc, sampler)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{'task':14} {'off (median s)':>15} {'on (median s)':>15} {'ratio':>7} {'spread':>12}"
          f" {'own CPU ratio':>14} {'agent CPU s/1000 files':>23}")
    ratio: dict[str, float] = {}
    extra: dict[str, float] = {}
    for name in times["off"]:
        off, on = statistics.median(times["off"][name]), statistics.median(times["on"][name])
        ratio[name] = on / off if off > 0 else float("inf")
        rounds = [b / a for a, b in zip(times["off"][name], times["on"][name]) if a > 0]
        cpu_off, cpu_on = statistics.median(user_cpu["off"][name]), statistics.median(user_cpu["on"][name])
        per_k = statistics.median(agent_cpu[name]) * 1000 / args.files
        extra[f"{name}_own_cpu_ratio"] = round(cpu_on / cpu_off, 3) if cpu_off > 0 else 0.0
        extra[f"{name}_agent_cpu_s_per_1000"] = round(per_k, 3)
        print(f"{name:14} {off:15.3f} {on:15.3f} {ratio[name]:7.2f} {min(rounds):5.2f}-{max(rounds):5.2f}"
              f" {extra[f'{name}_own_cpu_ratio']:14.2f} {per_k:23.3f}")
    print(f"agent CPU during the work: {cpu:.1f} s over {args.rounds} rounds; peak RSS {peak / 1e6:.1f} MB")
    if args.py_spy is not None and args.py_spy.exists():
        summarize_profile(args.py_spy)
    out: dict[str, object] = {f"{n}_ratio": round(ratio[n], 3) for n in ("cp", "tar", "grep", "write") if n in ratio}
    out.update(agent_cpu_s=round(cpu, 2), agent_peak_rss_mb=round(peak / 1e6, 1),
               chunker_mb_per_s=round(chunk_speed), sha256_mb_per_s=round(sha_speed), **extra)
    out["within_limits"] = (all(r <= 1.5 for n, r in ratio.items() if n != "cp_unwatched") and peak < 80e6
                            and chunk_speed >= sha_speed / 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
