"""The agent's memory against the size of its sensitive folders (issue 13: 100,000 files in 80 MB).

Makes a sensitive folder of N files (4-64 KB, random, ~4.9 chunks each, like office documents)
on disk (/var/tmp), starts the agent on it (`shoumi-agent run --config`, no collector; as root it
uses fanotify, otherwise inotify), waits until the first baseline is stored, lets it settle and
reads its RSS (VmRSS) and peak (VmHWM); then stops it, starts it again (a catch-up against the
stored snapshot) and reads the same. Prints the figures and one JSON line
{"files", "index_s", "rss_mb", "peak_rss_mb", "restart_s", "restart_rss_mb", "restart_peak_rss_mb",
"state_db_mb", "within_limits"} (limit: peak RSS under 80 MB).

    python bench/index_memory.py [--files 100000] [--keep-folder DIR]

``--keep-folder DIR`` makes the folder in DIR once and reuses it on later runs (100,000 files are
3.4 GB and take a minute to write).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

from agent.identity import AgentState, save_state  # noqa: E402
from overhead import make_folder, start_agent, stop_agent  # noqa: E402  (bench/, this script's folder)

LIMIT_MB = 80.0


def status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def run_once(state: Path, config: Path, log: Path) -> tuple[float, dict[str, int]]:
    """Starts the agent, waits until it has indexed (or caught up) and settled, reads its memory."""
    started = time.monotonic()
    proc, sampler = start_agent(state, config, log)
    try:
        return time.monotonic() - started, status(proc.pid)
    finally:
        stop_agent(proc, sampler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--keep-folder", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shoumi-index-memory-", dir="/var/tmp"))
    try:
        if args.keep_folder is not None:
            folder = args.keep_folder / f"sensitive-{args.files}"
            if not folder.exists():
                make_folder(folder, args.files)
        else:
            folder = work / "sensitive"
            make_folder(folder, args.files)
        state = work / "state"
        state.mkdir()
        save_state(state, AgentState("agt-index-memory", "127.0.0.1:9", "bench", tls=False))
        config = work / "agent.toml"
        config.write_text(f'[policy]\nsensitive_folders = ["{folder}"]\n')
        log = work / "agent.log"
        index_s, first = run_once(state, config, log)
        print(f"{args.files} files: indexed in {index_s:.1f} s, RSS {first['VmRSS'] / 1e6:.1f} MB, "
              f"peak {first['VmHWM'] / 1e6:.1f} MB", flush=True)
        restart_s, second = run_once(state, config, log)
        print(f"restart (catch-up): {restart_s:.1f} s, RSS {second['VmRSS'] / 1e6:.1f} MB, "
              f"peak {second['VmHWM'] / 1e6:.1f} MB", flush=True)
        db = state / "content-index.db"
        db_mb = db.stat().st_size / 1e6 if db.exists() else 0.0
        peak = max(first["VmHWM"], second["VmHWM"]) / 1e6
        print(json.dumps({
            "files": args.files, "index_s": round(index_s, 1), "rss_mb": round(first["VmRSS"] / 1e6, 1),
            "peak_rss_mb": round(first["VmHWM"] / 1e6, 1), "restart_s": round(restart_s, 1),
            "restart_rss_mb": round(second["VmRSS"] / 1e6, 1), "restart_peak_rss_mb": round(second["VmHWM"] / 1e6, 1),
            "state_db_mb": round(db_mb, 1), "within_limits": peak < LIMIT_MB,
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
