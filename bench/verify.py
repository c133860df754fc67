"""How fast `shoumi-collector verify` checks a store, and how much memory it holds (not a timed test).

    python bench/verify.py [--events 250000] [--agents 8] [--per-batch 250] [--jobs 1,2]
                           [--data-dir DIR] [--old-rev REV]

Builds a SQLite store of N events through the real ingest path (``IngestService``, pre-signed
batches, a signed tree head every 100 batches), or reuses the one in --data-dir if it holds N
events, then runs verify once per --jobs value, each in a fresh child process. The child samples
its own and its worker processes' memory every 50 ms (psutil): RSS summed over the processes
(forked workers share pages, so this overstates), and PSS summed (shared pages split between
them). ``bytes_per_event`` is the peak summed PSS less the child's PSS just before verify (store
open, modules imported), divided by the events: what verify adds, per event, over the whole run. With --old-rev, the verifier of that git revision runs too, measured the same way.
One JSON line per run:
``{"events", "seconds", "events_per_s", "peak_rss_mb", "bytes_per_event", "jobs", ...}``, with
``cpu_s`` (verify's and its workers' CPU seconds) beside the wall clock: on a loaded machine the
wall clock measures mostly the other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_MB = 1024 * 1024


def build(data_dir: Path, *, events: int, agents: int, per_batch: int) -> None:
    """A store of ``events`` events from ``agents`` agents, ingested as pre-signed batches."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shoumi.batch import GENESIS_HASH, sign_batch
    from shoumi.v1 import events_pb2

    from collector.fleet.models import AgentRecord
    from collector.ingest.service import IngestService
    from collector.storage import open_store
    from collector.transparency import TreeHeadSigner, load_or_create_tree_key

    store = open_store(data_dir)
    try:
        keys = []
        with store.transaction() as tx:
            for i in range(agents):
                key = Ed25519PrivateKey.generate()
                tx.add_enroll_token(token_hash=f"bench-{i}", created_at_ns=0, expires_at_ns=2**62, created_by="bench")
                record = AgentRecord(f"agt-{i:03d}", key.public_key().public_bytes_raw(), f"ws-{i}", "Linux", "bench",
                                     time.time_ns())
                assert tx.consume_enroll_token(token_hash=f"bench-{i}", agent=record, now_ns=1) is None
                keys.append(key)
        ingest = IngestService(store)
        signer = TreeHeadSigner(store, load_or_create_tree_key(data_dir))
        heads = [(1, GENESIS_HASH)] * agents
        kinds = ("file.read", "file.write", "file.copy")
        batches = events // per_batch
        started = time.perf_counter()
        for n in range(batches):
            i = n % agents
            seq, prev = heads[i]
            batch = events_pb2.EventBatch(agent_id=f"agt-{i:03d}", epoch=1, first_seq=seq, prev_batch_hash=prev,
                                          created_unix_ns=time.time_ns())
            now = time.time_ns()
            for s in range(seq, seq + per_batch):
                e = batch.events.add(id=str(uuid.uuid4()), kind=kinds[s % 3], time_unix_ns=now + s, seq=s,
                                     path=f"/srv/finance/q{s % 4}/report-{s}.xlsx", size=1000 + s, sha256="ab" * 32,
                                     user=f"user{s % 40}", uid=1000 + s % 40, pid=4000 + s % 100, process="excel",
                                     exe="/usr/bin/excel")
                if s % 3 == 2:
                    e.dest_path = f"/media/usb/report-{s}.xlsx"
                e.attributes.update({"match_share": 0.5, "source": "bench"})
            heads[i] = (seq + per_batch, sign_batch(batch, keys[i]))
            ingest.ingest(batch, authenticated_agent=batch.agent_id)
            if n % 100 == 99:
                signer.sign_if_grown()
            if n % 200 == 199:
                print(f"built {(n + 1) * per_batch} events ({(n + 1) * per_batch / (time.perf_counter() - started):.0f}/s)",
                      file=sys.stderr)
        signer.sign_if_grown()
        (data_dir / "bench-events").write_text(str(batches * per_batch))
    finally:
        store.close()


def _tree(proc: Any) -> list[Any]:
    try:
        return [proc, *proc.children(recursive=True)]
    except Exception:
        return [proc]


class _Sampler(threading.Thread):
    """The summed RSS and PSS of this process and its children, every 50 ms; keeps the peaks."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.peak_rss = self.peak_pss = 0
        self.stop = threading.Event()

    def sample(self, *, pss: bool = True) -> None:
        rss = shared = 0
        for p in _tree(self.me):
            try:  # PSS reads /proc/PID/smaps: costly, so only every 10th sample
                info = p.memory_full_info() if pss else p.memory_info()
            except Exception:  # a worker that just ended
                continue
            rss += info.rss
            shared += getattr(info, "pss", info.rss)
        self.peak_rss = max(self.peak_rss, rss)
        if pss:
            self.peak_pss = max(self.peak_pss, shared)

    def run(self) -> None:
        n = 0
        while not self.stop.wait(0.05):
            n += 1
            self.sample(pss=n % 10 == 0)


def child(data_dir: Path, jobs: int, old: Path | None) -> None:
    """Runs verify once and prints the measurement as JSON."""
    import importlib.util
    import resource

    import psutil

    from collector.storage import open_store
    from collector.transparency import load_tree_key, tree_public_key

    if old is None:
        from collector.verify import verify_store
    else:
        spec = importlib.util.spec_from_file_location("old_verify", old)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["old_verify"] = module
        spec.loader.exec_module(module)
        verify_store = module.verify_store
    store = open_store(data_dir)
    key = tree_public_key(load_tree_key(data_dir))
    with store.read() as tx:  # open the connection and the statement caches before the baseline
        tx.count_events()
    info = psutil.Process().memory_full_info()
    baseline, baseline_pss = info.rss, getattr(info, "pss", info.rss)
    sampler = _Sampler()
    sampler.start()
    started = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    if old is None:
        report = verify_store(store, tree_public_key=key, jobs=jobs, location=str(data_dir))
    else:
        report = verify_store(store, tree_public_key=key)
    seconds = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    sampler.sample()
    store.close()
    me, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    self_peak, worker_peak = me.ru_maxrss * 1024, workers.ru_maxrss * 1024
    # CPU seconds of verify and its workers (the sampler thread's share included): on a loaded machine
    # the wall clock mostly measures the other processes
    cpu = (me.ru_utime + me.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime + workers.ru_utime + workers.ru_stime)
    peak = max(sampler.peak_rss, self_peak)
    print(json.dumps({
        "events": report.events, "seconds": round(seconds, 2), "events_per_s": round(report.events / seconds),
        "peak_rss_mb": round(peak / _MB, 1), "bytes_per_event": round((sampler.peak_pss - baseline_pss) / max(report.events, 1), 1),
        "jobs": jobs if old is None else 1, "verifier": "new" if old is None else f"old ({old.name})",
        "ok": report.ok, "baseline_rss_mb": round(baseline / _MB, 1), "baseline_pss_mb": round(baseline_pss / _MB, 1), "peak_pss_mb": round(sampler.peak_pss / _MB, 1),
        "coordinator_peak_rss_mb": round(self_peak / _MB, 1), "worker_peak_rss_mb": round(worker_peak / _MB, 1),
        "cpu_s": round(cpu, 2), "events_per_cpu_s": round(report.events / max(cpu, 1e-9)),
        "load_1min": round(os.getloadavg()[0], 1),
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=250_000)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--per-batch", type=int, default=250)
    parser.add_argument("--jobs", default="1,2", help="comma-separated job counts to run verify with")
    parser.add_argument("--data-dir", type=Path, help="keep (and reuse) the store here")
    parser.add_argument("--old-rev", help="also run the verifier of this git revision (e.g. 3e9b589~1)")
    parser.add_argument("--child", nargs=3, metavar=("DIR", "JOBS", "OLD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), None if args.child[2] == "-" else Path(args.child[2]))
        return 0
    tmp = tempfile.TemporaryDirectory(prefix="bench-verify-")
    data_dir = args.data_dir or Path(tmp.name) / "collector"
    marker = data_dir / "bench-events"
    wanted = args.events // args.per_batch * args.per_batch
    if not (marker.exists() and marker.read_text() == str(wanted)):
        if (data_dir / "collector.db").exists():
            raise SystemExit(f"{data_dir} holds another store; give an empty --data-dir")
        started = time.perf_counter()
        build(data_dir, events=args.events, agents=args.agents, per_batch=args.per_batch)
        print(f"built {wanted} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    runs: list[tuple[int, str]] = [(int(j), "-") for j in args.jobs.split(",")]
    if args.old_rev:
        old = Path(tmp.name) / "old_verify.py"
        old.write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"{args.old_rev}:collector/verify.py"],
                                      capture_output=True, text=True, check=True).stdout)
        runs.append((1, str(old)))
    failed = False
    for jobs, old_path in runs:
        out = subprocess.run([sys.executable, __file__, "--child", str(data_dir), str(jobs), old_path],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            failed = True
            continue
        line = out.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        failed |= not json.loads(line)["ok"]
    tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
