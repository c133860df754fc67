"""kill -9 of a real agent at random moments, during a burst and during its own catch-up: the
events it stored, across all its runs, tell each change exactly once (no phantom, none missed)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shoumi.v1 import events_pb2

from agent.identity import AgentState, save_state

AGENT = [sys.executable, "-m", "agent", "run"]
INITIAL = 300
KILLS = 12


def _events(spool: Path) -> list[events_pb2.Event]:
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        # sealed batches too: the shipper seals what waits even while no collector answers
        sealed = [events_pb2.EventBatch.FromString(r[0]) for r in db.execute("SELECT data FROM batches")]
        raws = [r[0] for r in db.execute("SELECT data FROM events")]
    finally:
        db.close()
    events = [e for batch in sealed for e in batch.events] + [events_pb2.Event.FromString(raw) for raw in raws]
    return sorted(events, key=lambda e: e.seq)


def _meta(spool: Path, key: str) -> int:
    try:
        db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def _gaps(spool: Path) -> int:
    try:
        return sum(1 for e in _events(spool) if e.kind == "agent.capture_gap")
    except sqlite3.Error:
        return -1


def _snapshot_matches(spool: Path, folder: Path) -> bool:
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        rows = {os.fsdecode(bytes(p)): sha for p, sha in db.execute("SELECT path, sha256 FROM snapshot")}
    except sqlite3.Error:
        return False
    finally:
        db.close()
    disk = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    return rows == disk


def _start(state: Path, folder: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([*AGENT, "--state-dir", str(state), "--watch", str(folder), "--heartbeat-seconds", "1"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2])


def _wait(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _burst(folder: Path, stop: threading.Event, made: list[str]) -> None:
    """Creates new files and rewrites initial ones, each once, until told to stop."""
    rng = random.Random(7)
    i = 0
    while not stop.is_set() and i < 4000:
        new = folder / f"new-{i:05d}.txt"
        new.write_bytes(b"new file %d " % i + os.urandom(rng.randint(10, 3000)))
        made.append(str(new))
        if i % 3 == 0 and i // 3 < INITIAL:
            with open(folder / f"old-{i // 3:04d}.txt", "ab") as f:
                f.write(b" edited %d" % i)
        i += 1
        time.sleep(rng.uniform(0, 0.004))


@pytest.mark.slow
def test_kill9_during_burst_and_catch_up_reports_each_change_once(tmp_path: Path) -> None:
    folder = tmp_path / "finance"
    folder.mkdir()
    for n in range(INITIAL):
        (folder / f"old-{n:04d}.txt").write_bytes(b"initial %d " % n + os.urandom(500))
    state = tmp_path / "state"
    state.mkdir()
    save_state(state, AgentState("agt-crash", "127.0.0.1:9", "test", tls=False))  # no collector: events stay spooled
    spool, log = state / "spool.db", tmp_path / "agent.log"
    baseline = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}

    agent = _start(state, folder, log)
    _wait(lambda: _meta(spool, "snapshot_baseline") == 1, "the first baseline")
    stop, made = threading.Event(), []
    burst = threading.Thread(target=_burst, args=(folder, stop, made))
    burst.start()
    rng = random.Random(13)
    try:
        for k in range(KILLS):
            # the run has begun (its gap is stored); then killed a while into it (mid-burst), or
            # at once (mid-catch-up)
            _wait(lambda: _gaps(spool) == k, f"the gap of run {k}")
            time.sleep(rng.uniform(0.3, 1.2) if k % 2 == 0 else rng.uniform(0.0, 0.25))
            agent.send_signal(signal.SIGKILL)
            agent.wait()
            time.sleep(rng.uniform(0.0, 0.3))  # changes made while nobody watches
            agent = _start(state, folder, log)
        stop.set()
        burst.join()
        _wait(lambda: _snapshot_matches(spool, folder), "the last catch-up", timeout=120)
        time.sleep(1.0)
    finally:
        stop.set()
        burst.join()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0, log.read_text()[-3000:]

    events = _events(spool)
    creates: dict[str, int] = {}
    last_sha = dict(baseline)
    phantoms: list[str] = []
    for e in events:
        if not e.path.startswith(str(folder)):
            continue
        caught_up = e.attributes.fields.get("catch_up") is not None
        if e.kind == "file.create":
            creates[e.path] = creates.get(e.path, 0) + 1
            if e.path in baseline or creates[e.path] > 1:
                phantoms.append(f"create {e.path} (x{creates[e.path]})")
        elif e.kind == "file.delete":
            phantoms.append(f"delete {e.path}")
        if caught_up and e.kind == "file.write" and last_sha.get(e.path) == e.sha256:
            phantoms.append(f"catch-up write of unchanged {e.path}")
        if e.sha256:
            last_sha[e.path] = e.sha256
    starts = [e.seq for e in events if e.kind == "agent.start"]
    assert phantoms == [], [(ph, [(e.seq, e.kind, sorted(e.attributes.fields), sum(s < e.seq for s in starts))
                                  for e in events if e.path == ph.split()[1]]) for ph in phantoms[:2]]
    missed = [p for p in made if creates.get(p, 0) != 1]
    disk = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    missed += [p for p, sha in disk.items() if last_sha.get(p) != sha]
    assert missed == [], [(Path(p).name, creates.get(p), [(e.kind, e.sha256[:8], dict(e.attributes.fields).keys())
                                                        for e in events if e.path == p]) for p in missed[:3]]
    gaps = [e for e in events if e.kind == "agent.capture_gap"
            and e.attributes.fields["source"].string_value == "unclean_stop"]
    assert len(gaps) == KILLS
    assert all(g.attributes.fields["when"].number_value <= g.attributes.fields["until"].number_value for g in gaps)
    assert len(made) > 100  # the burst really ran across the kills
