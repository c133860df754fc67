"""fanotify as root: real cat, tee and setpriv processes, attributed; overflow; prompt stop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from agent.sources.fanotify import (
    FanotifyEventMapper,
    FanotifyReader,
    FanotifyRecord,
    fanotify_available,
    native_exec_holder,
)

needs_root = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for fanotify"),
]

CONTENT = os.urandom(1024 * 1024)  # larger than a pipe: cat stays alive until we drain it


class Records:
    """Collects records from the reader thread and lets a test wait for one."""

    def __init__(self) -> None:
        self.items: list[FanotifyRecord] = []
        self.overflows = 0
        self._cond = threading.Condition()

    def add(self, record: FanotifyRecord) -> None:
        with self._cond:
            self.items.append(record)
            self._cond.notify_all()

    def overflow(self) -> None:
        with self._cond:
            self.overflows += 1
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[FanotifyRecord], bool], timeout: float = 10.0
                 ) -> FanotifyRecord:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for record in self.items:
                    if predicate(record):
                        return record
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such record; have {self.items!r}")
                self._cond.wait(left)


@pytest.fixture
def watched() -> Iterator[Path]:
    """A directory every user can traverse, with a world-readable file in a subdirectory."""
    root = Path(tempfile.mkdtemp(prefix="shoumi-fan-"))
    root.chmod(0o755)
    (root / "Contracts").mkdir(mode=0o755)
    (root / "Contracts" / "nda.pdf").write_bytes(CONTENT)
    (root / "Contracts" / "nda.pdf").chmod(0o644)
    yield root
    shutil.rmtree(root)


@pytest.fixture
def reader(watched: Path, request: pytest.FixtureRequest) -> Iterator[tuple[FanotifyReader, Records]]:
    records = Records()
    marks, _, how = getattr(request, "param", "mount").partition("-")  # "mount-python": records parsed in Python
    r = FanotifyReader([watched], records.add, on_overflow=records.overflow, marks=marks,  # type: ignore[arg-type]
                       native_reads=how != "python")
    r.start()
    yield r, records
    r.stop()


def run_reader_process(argv: list[str], records: Records, path: Path) -> subprocess.Popen[bytes]:
    """Starts a process that reads ``path`` to stdout, waits for its open, then drains it."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as proc:
        records.wait_for(lambda r: r.pid == proc.pid and r.kind == "open")
        assert proc.stdout is not None
        assert proc.stdout.read() == CONTENT
    return proc


def _with_root(f: Callable[..., None]) -> Callable[..., None]:
    for mark in needs_root:
        f = mark(f)
    return f


@_with_root
def test_fanotify_available_as_root() -> None:
    assert fanotify_available()


@_with_root
@pytest.mark.parametrize("reader", ["mount", "mount-python", "directory-python"], indirect=True)
def test_cat_read_is_attributed_to_cat(watched: Path, reader: tuple[FanotifyReader, Records]
                                       ) -> None:
    _, records = reader
    path = watched / "Contracts" / "nda.pdf"
    proc = run_reader_process(["cat", str(path)], records, path)
    opened = records.wait_for(lambda r: r.pid == proc.pid and r.kind == "open")
    closed = records.wait_for(lambda r: r.pid == proc.pid and r.kind == "close_nowrite")
    for record in (opened, closed):
        assert record.path == str(path)
        assert record.process == "cat"
        assert os.path.basename(record.exe) == "cat"
        assert (record.uid, record.user) == (0, "root")
        assert record.time_ns > 0
    assert not any(r.pid == proc.pid and r.kind == "close_write" for r in records.items)


@_with_root
def test_read_by_another_user_is_attributed_to_that_user(
    watched: Path, reader: tuple[FanotifyReader, Records]
) -> None:
    _, records = reader
    path = watched / "Contracts" / "nda.pdf"
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", str(path)]
    proc = run_reader_process(argv, records, path)
    record = records.wait_for(lambda r: r.pid == proc.pid and r.kind == "open")
    assert (record.uid, record.user, record.process) == (65534, "nobody", "cat")
    closed = records.wait_for(lambda r: r.pid == proc.pid and r.kind == "close_nowrite")
    assert (closed.uid, closed.user) == (65534, "nobody")


@_with_root
@pytest.mark.parametrize("reader", ["mount", "mount-python", "directory-python"], indirect=True)
def test_write_is_reported_as_close_write(watched: Path, reader: tuple[FanotifyReader, Records]
                                          ) -> None:
    _, records = reader
    path = watched / "Contracts" / "new.txt"
    proc = subprocess.Popen(["tee", str(path)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stdin is not None
    records.wait_for(lambda r: r.pid == proc.pid and r.kind == "open")
    proc.stdin.write(b"written by tee\n")
    proc.stdin.close()
    proc.wait(timeout=10)
    record = records.wait_for(lambda r: r.pid == proc.pid and r.kind == "close_write")
    assert record.path == str(path)
    assert record.process == "tee"
    assert path.read_bytes() == b"written by tee\n"


@_with_root
@pytest.mark.parametrize("reader", ["mount", "mount-python", "directory-python"], indirect=True)
def test_the_agents_own_reads_are_not_reported(watched: Path,
                                               reader: tuple[FanotifyReader, Records]) -> None:
    _, records = reader
    assert (watched / "Contracts" / "nda.pdf").read_bytes() == CONTENT
    (watched / "Contracts" / "mine.txt").write_text("by the agent")
    proc = run_reader_process(["cat", str(watched / "Contracts" / "nda.pdf")], records, watched)
    records.wait_for(lambda r: r.pid == proc.pid and r.kind == "close_nowrite")
    assert all(r.pid != os.getpid() for r in records.items)


@_with_root
@pytest.mark.parametrize("reader", ["mount", "mount-python", "directory-python"], indirect=True)
def test_paths_outside_the_roots_are_not_reported(watched: Path,
                                                  reader: tuple[FanotifyReader, Records]) -> None:
    _, records = reader
    outside = Path(tempfile.mkdtemp(prefix="shoumi-outside-"))
    try:
        (outside / "f").write_bytes(CONTENT)
        subprocess.run(["cat", str(outside / "f")], stdout=subprocess.DEVNULL, check=True)
        proc = run_reader_process(["cat", str(watched / "Contracts" / "nda.pdf")], records, watched)
        records.wait_for(lambda r: r.pid == proc.pid and r.kind == "close_nowrite")
        assert all(r.path.startswith(str(watched) + "/") for r in records.items)
    finally:
        shutil.rmtree(outside)


@_with_root
@pytest.mark.parametrize("reader", ["directory"], indirect=True)
def test_directory_marks_need_new_directories_added(
    watched: Path, reader: tuple[FanotifyReader, Records]
) -> None:
    r, records = reader
    proc = run_reader_process(["cat", str(watched / "Contracts" / "nda.pdf")], records, watched)
    records.wait_for(lambda rec: rec.pid == proc.pid and rec.kind == "close_nowrite")
    new_dir = watched / "Later"
    new_dir.mkdir()
    (new_dir / "x").write_bytes(CONTENT)
    unseen = subprocess.run(["cat", str(new_dir / "x")], stdout=subprocess.DEVNULL, check=True)
    assert unseen.returncode == 0
    r.watch_directory(new_dir)
    proc = run_reader_process(["cat", str(new_dir / "x")], records, watched)
    records.wait_for(lambda rec: rec.pid == proc.pid and rec.kind == "close_nowrite")
    # The read before watch_directory was missed: the documented cost of directory marks.
    assert {rec.path for rec in records.items if rec.path.startswith(str(new_dir))} == {
        str(new_dir / "x")
    }
    assert sum(1 for rec in records.items if rec.path == str(new_dir / "x")
               and rec.kind == "open") == 1


@_with_root
def test_queue_overflow_is_reported(watched: Path) -> None:
    """The kernel's queue overflows when the reader thread does not read (a starved reader)."""
    records = Records()
    gate = threading.Event()

    class StarvedReader(FanotifyReader):
        def _drain(self, group: int) -> None:
            gate.wait(30)  # the reader thread stops reading: the kernel queue fills
            super()._drain(group)

    r = StarvedReader([watched], records.add, on_overflow=records.overflow)
    r.start()
    try:
        queue = int(Path("/proc/sys/fs/fanotify/max_queued_events").read_text())
        burst = watched / "burst"
        burst.mkdir()
        # Distinct files: the kernel merges repeated events on one file into one queue entry.
        for i in range(queue + 1000):
            os.close(os.open(burst / str(i), os.O_WRONLY | os.O_CREAT, 0o644))
        gate.set()
        deadline = time.monotonic() + 30
        while records.overflows == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert records.overflows >= 1
        assert r.overflows == records.overflows
    finally:
        gate.set()
        r.stop()


@_with_root
def test_a_blocked_callback_never_blocks_held_opens(watched: Path) -> None:
    """A callback that blocks (a full queue downstream) must not stop the reader answering held
    opens: records beyond the delivery queue are counted as lost and reported, nothing hangs."""
    records = Records()
    gate = threading.Event()

    def blocked(record: FanotifyRecord) -> None:
        gate.wait(60)
        records.add(record)

    r = FanotifyReader([watched], blocked, on_overflow=records.overflow, hold_roots=[watched], max_pending=10)
    r.start()
    try:
        path = watched / "Contracts" / "nda.pdf"
        for _ in range(20):  # each open is held; each must still be answered while the callback waits
            done = subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, timeout=20)
            assert done.returncode == 0
        assert r.lost >= 1 and records.overflows >= 1
    finally:
        gate.set()
        r.stop()
    # what was queued (10, and the one the callback held) is delivered at stop; the rest counted as lost
    assert 10 <= len(records.items) <= 11
    assert len(records.items) + r.lost == r.records


@_with_root
def test_stop_is_prompt_even_with_a_long_poll_timeout(watched: Path) -> None:
    r = FanotifyReader([watched], lambda rec: None, poll_timeout=3600)
    r.start()
    assert r.is_running
    started = time.monotonic()
    r.stop()
    assert not r.is_running
    assert time.monotonic() - started < 10  # a wake pipe, not the hour-long poll timeout
    r.stop()  # twice is harmless


@_with_root
def test_cat_read_maps_to_an_attributed_file_read(watched: Path,
                                                  reader: tuple[FanotifyReader, Records]) -> None:
    _, records = reader
    path = watched / "Contracts" / "nda.pdf"
    proc = run_reader_process(["cat", str(path)], records, path)
    records.wait_for(lambda r: r.pid == proc.pid and r.kind == "close_nowrite")
    mapper = FanotifyEventMapper()
    events = [e for r in list(records.items) if r.pid == proc.pid if (e := mapper.map(r))]
    assert [(e.kind, e.path, e.process, e.pid, e.user, e.uid) for e in events] == [
        ("file.read", str(path), "cat", proc.pid, "root", 0)
    ]
    assert events[0].attributes["attribution"] == "fanotify"
    assert events[0].attributes["open_ms"] >= 0


def record(kind: str, *, pid: int = 10, path: str = "/s/a", t: int = 1_000_000_000
           ) -> FanotifyRecord:
    return FanotifyRecord(path, kind, pid, 1000, "alice", "vim", "/usr/bin/vim", t)  # type: ignore[arg-type]


def test_records_are_read_in_c_here() -> None:
    """The C reader is built wherever the exec holder is (one extension): the agent's default."""
    from agent.sources import _execheld

    assert native_exec_holder() and callable(_execheld.read_records)


def test_mapper_pairs_open_and_close() -> None:
    mapper = FanotifyEventMapper()
    assert mapper.map(record("open", t=1_000_000_000)) is None
    event = mapper.map(record("close_nowrite", t=1_005_000_000))
    assert event is not None
    assert (event.kind, event.path, event.uid, event.user, event.pid, event.process, event.exe) == (
        "file.read", "/s/a", 1000, "alice", 10, "vim", "/usr/bin/vim"
    )
    assert event.attributes["open_ms"] == 5.0
    assert event.time_unix_ns == 1_005_000_000


def test_mapper_close_write_is_a_write_and_unpaired_close_still_counts() -> None:
    mapper = FanotifyEventMapper()
    write = mapper.map(record("close_write"))
    assert write is not None and write.kind == "file.write"
    read = mapper.map(record("close_nowrite", pid=11))
    assert read is not None and read.kind == "file.read" and "open_ms" not in read.attributes


def test_mapper_remembers_a_bounded_number_of_opens() -> None:
    mapper = FanotifyEventMapper(max_open=2)
    for pid in (1, 2, 3):
        mapper.map(record("open", pid=pid))
    first = mapper.map(record("close_nowrite", pid=1))
    last = mapper.map(record("close_nowrite", pid=3))
    assert first is not None and "open_ms" not in first.attributes
    assert last is not None and "open_ms" in last.attributes


@_with_root
def test_held_opens_name_processes_that_exit_at_once(watched: Path) -> None:
    """Short-lived readers (a `head -c1` of a small file exits in microseconds) are named every time
    when their opens are held, even when the reader is busy and reads their records after they are
    gone (without holding, this test fails: the records come back with no process and uid -1)."""
    small = watched / "Contracts" / "small.txt"
    small.write_bytes(b"confidential\n")
    records = Records()
    busy = threading.Event()

    def busy_reader(record: FanotifyRecord) -> None:
        if not busy.is_set():  # the first record finds the reader busy for a while
            busy.set()
            time.sleep(1.5)
        records.add(record)

    r = FanotifyReader([watched], busy_reader, hold_roots=[watched])
    r.start()
    try:
        subprocess.run(["cat", str(watched / "Contracts" / "nda.pdf")], stdout=subprocess.DEVNULL, check=True)
        assert busy.wait(10)
        pids: list[int] = []
        for _ in range(25):
            done = subprocess.run(["head", "-c1", str(small)], stdout=subprocess.DEVNULL, check=True)
            assert done.returncode == 0
        for _ in range(25):
            pids.append(records.wait_for(lambda rec: rec.kind == "close_nowrite" and rec.path == str(small)
                                         and rec.pid not in pids).pid)
        reads = [rec for rec in records.items if rec.kind == "close_nowrite" and rec.path == str(small)]
        assert len(reads) >= 25
        assert {(rec.process, rec.uid, rec.user) for rec in reads} == {("head", 0, "root")}
        assert r.held >= 25
    finally:
        r.stop()
    # once the reader is gone, nothing is held: opens go through
    assert subprocess.run(["cat", str(small)], capture_output=True, timeout=10).stdout == b"confidential\n"


@_with_root
@pytest.mark.parametrize("native", [True, False], ids=["c-holder", "python-holder"])
def test_held_execs_name_processes_that_exit_at_once_without_holding_opens(watched: Path, native: bool) -> None:
    """The agent's way: program starts are held, opens are not; a `head -c1` that is long gone
    when its records are read is still named, from what was noted when it started (by the C
    holder, which never waits for the GIL, or by the Python one where it is not built)."""
    small = watched / "Contracts" / "small.txt"
    small.write_bytes(b"confidential\n")
    records = Records()
    busy = threading.Event()

    def busy_reader(record: FanotifyRecord) -> None:
        if not busy.is_set():
            busy.set()
            time.sleep(1.5)
        records.add(record)

    r = FanotifyReader([watched], busy_reader, marks="directory", hold_execs=["/", str(watched)],
                       native_execs=native)
    r.start()
    try:
        subprocess.run(["cat", str(watched / "Contracts" / "nda.pdf")], stdout=subprocess.DEVNULL, check=True)
        assert busy.wait(10)
        for _ in range(25):
            subprocess.run(["head", "-c1", str(small)], stdout=subprocess.DEVNULL, check=True)
        pids: list[int] = []
        for _ in range(25):
            pids.append(records.wait_for(lambda rec: rec.kind == "close_nowrite" and rec.path == str(small)
                                         and rec.pid not in pids).pid)
        reads = [rec for rec in records.items if rec.kind == "close_nowrite" and rec.path == str(small)]
        assert {(rec.process, rec.uid, rec.user, rec.exe.rsplit("/", 1)[-1]) for rec in reads} == {("head", 0, "root", "head")}
        assert r.held == 0 and r.held_execs >= 26
    finally:
        r.stop()
    assert subprocess.run(["cat", str(small)], capture_output=True, timeout=10).stdout == b"confidential\n"


@_with_root
@pytest.mark.slow
def test_a_slow_agent_loses_nothing_of_a_burst_larger_than_its_queues(watched: Path) -> None:
    """No open is held any more, so nothing slows a burst to the agent's pace: the kernel keeps
    what the reader has not read (unlimited queue) and the reader waits for the delivery queue."""
    closed: list[str] = []
    slow_start = threading.Event()

    def slow(record: FanotifyRecord) -> None:
        if not slow_start.is_set():
            slow_start.set()
            time.sleep(1.0)  # the agent is busy while the burst runs
        if record.kind == "close_write":
            closed.append(record.path)

    r = FanotifyReader([watched], slow, marks="directory", unlimited_queue=True, max_pending=100, batch_wait=0.02)
    r.start()
    try:
        burst = int(Path("/proc/sys/fs/fanotify/max_queued_events").read_text()) + 2000
        # another process (the reader never reports its own pid)
        subprocess.run([sys.executable, "-c", f"import os\nfor i in range({burst}): "
                        f"os.close(os.open('{watched}/b%d' % i, os.O_WRONLY | os.O_CREAT, 0o644))"], check=True)
        deadline = time.monotonic() + 60
        while len(closed) < burst and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        r.stop()
    assert (len(set(closed)), r.lost, r.overflows) == (burst, 0, 0)


@_with_root
def test_a_program_exec_d_after_a_uid_change_is_named_with_its_own_user(watched: Path) -> None:
    """setpriv (root) changes uid, then execs cat in the same process: two held execs of one pid;
    the second is a new program with its own user, not more of the first."""
    records = Records()
    busy = threading.Event()

    def busy_reader(record: FanotifyRecord) -> None:
        if not busy.is_set():
            busy.set()
            time.sleep(1.0)  # the process is gone when its records are handed on
        records.add(record)

    r = FanotifyReader([watched], busy_reader, marks="directory", hold_execs=["/", str(watched)])
    r.start()
    try:
        path = watched / "Contracts" / "nda.pdf"
        subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "head", "-c1", str(path)],
                       stdout=subprocess.DEVNULL, check=True)
        rec = records.wait_for(lambda rec: rec.kind == "close_nowrite" and rec.path == str(path))
        assert (rec.process, rec.uid, rec.user) == ("head", 65534, "nobody")
    finally:
        r.stop()


@_with_root
def test_a_reused_pid_is_not_taken_for_the_process_cached_under_it(watched: Path) -> None:
    """The cache is keyed by pid and start time: a process whose pid an earlier one had is looked up."""
    from agent.sources.fanotify import _Process

    records = Records()
    r = FanotifyReader([watched], records.add, marks="directory")
    r.start()
    try:
        # cat reads the file, then waits on its stdin: alive when its record is read
        proc = subprocess.Popen(["sh", "-c", f"read x; exec cat {watched}/Contracts/nda.pdf -"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        # what an earlier process with this pid taught the cache
        r._processes[proc.pid] = _Process(12345, "mallory", "evil", "/bin/evil", start=1)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        rec = records.wait_for(lambda rec: rec.kind == "close_nowrite" and rec.pid == proc.pid)
        proc.stdin.close()
        assert proc.wait(10) == 0
        assert (rec.process, rec.uid, rec.user) == ("cat", 0, "root")
    finally:
        r.stop()


@_with_root
def test_a_reader_that_dies_releases_held_opens(watched: Path) -> None:
    """If the reader thread ends for any reason but stop(), opens in held folders must not hang."""

    class DyingReader(FanotifyReader):
        def _drain(self) -> None:
            raise RuntimeError("the reader broke")

    r = DyingReader([watched], lambda record: None, hold_roots=[watched])
    r.start()
    try:
        done = subprocess.run(["cat", str(watched / "Contracts" / "nda.pdf")], capture_output=True, timeout=20)
        assert done.returncode == 0 and done.stdout == CONTENT  # allowed: the group was closed, not left waiting
        deadline = time.monotonic() + 5
        while r.is_running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not r.is_running
    finally:
        r.stop()


FORKER = """
import os, sys
with open(sys.argv[1], "rb") as f:  # the parent's own read: its record names the parent
    f.read(1)
child = os.fork()
if child == 0:
    with open(sys.argv[1], "rb") as f:
        f.read(1)
    os._exit(0)  # no exec, gone a moment after its read
os.waitpid(child, 0)
print(child)
"""


def _fork_reader(watched: Path, *, track_forks: bool) -> tuple[dict[str, FanotifyRecord], int]:
    """A process reads a sensitive file, forks a child that reads it too and exits without exec
    within a millisecond; both are reaped before the reader reads their records (it is stalled
    behind a callback that waits). Returns the close records by "parent"/"child", and the child pid."""
    small = watched / "Contracts" / "small.txt"
    small.write_bytes(b"confidential\n")
    gate = watched / "Contracts" / "nda.pdf"
    records = Records()
    release = threading.Event()

    def stalled(record: FanotifyRecord) -> None:
        if record.path == str(gate):
            release.wait(20)
        records.add(record)

    # one record in the delivery queue: a stalled callback stalls the reader itself
    r = FanotifyReader([watched], stalled, marks="directory", hold_execs=["/", str(watched)], max_pending=1,
                       track_forks=track_forks)
    r.start()
    try:
        for _ in range(3):  # more records of the gate than the queue holds: the reader waits
            subprocess.run(["cat", str(gate)], stdout=subprocess.DEVNULL, check=True)
        forker = subprocess.run([sys.executable, "-c", FORKER, str(small)], capture_output=True, check=True)
        child = int(forker.stdout)
        time.sleep(0.1)  # both long gone from /proc
        assert not Path(f"/proc/{child}").exists()
        release.set()
        parent = records.wait_for(lambda rec: rec.kind == "close_nowrite" and rec.path == str(small)
                                  and rec.pid != child)
        forked = records.wait_for(lambda rec: rec.kind == "close_nowrite" and rec.path == str(small)
                                  and rec.pid == child)
    finally:
        release.set()
        r.stop()
    return {"parent": parent, "child": forked}, child


@_with_root
def test_a_process_forked_without_exec_that_exits_at_once_is_named_after_its_parent(watched: Path) -> None:
    """A fork is a copy of its parent (program, name, user); the kernel tells each fork before the
    child runs, so a child that is gone when its record is read is named after its parent, and its
    records say whose identity it carries. (Without following forks it had no name and uid -1.)"""
    found, child = _fork_reader(watched, track_forks=True)
    parent, forked = found["parent"], found["child"]
    assert parent.process and parent.exe and parent.uid == os.getuid()
    assert (forked.process, forked.exe, forked.uid, forked.user) == (parent.process, parent.exe, parent.uid,
                                                                    parent.user)
    assert forked.pid == child and forked.parent == parent.pid and parent.parent == 0
    event = FanotifyEventMapper().map(forked)
    assert event is not None and event.attributes["identity_of_parent"] == parent.pid


@_with_root
def test_without_following_forks_such_a_child_has_no_name(watched: Path) -> None:
    """The same scenario without ``track_forks``: what the test above guards against."""
    found, _child = _fork_reader(watched, track_forks=False)
    assert (found["child"].process, found["child"].uid) == ("", -1)
    assert found["parent"].process  # the parent is named from its held exec


@_with_root
def test_write_only_roots_report_writes_and_no_reads(watched: Path) -> None:
    """Destinations are marked for close-after-write only: a copy there is seen, a read there
    costs nothing; the sensitive root beside it still reports reads."""
    dest = watched / "dest"
    dest.mkdir()
    records = Records()
    r = FanotifyReader([watched / "Contracts", dest], records.add, marks="directory", write_only_roots=[dest],
                       hold_execs=["/", str(watched)])
    r.start()
    try:
        subprocess.run(["cp", str(watched / "Contracts" / "nda.pdf"), str(dest / "copy.pdf")], check=True)
        subprocess.run(["cat", str(dest / "copy.pdf")], stdout=subprocess.DEVNULL, check=True)
        subprocess.run(["cat", str(watched / "Contracts" / "nda.pdf")], stdout=subprocess.DEVNULL, check=True)
        records.wait_for(lambda rec: rec.kind == "close_write" and rec.path == str(dest / "copy.pdf"))
        cat = records.wait_for(lambda rec: rec.kind == "close_nowrite" and rec.process == "cat")
        assert cat.path == str(watched / "Contracts" / "nda.pdf")
    finally:
        r.stop()
    assert [rec.kind for rec in records.items if rec.path.startswith(str(dest))] == ["close_write"]
