"""Attributed file opens, reads and writes on Linux, from fanotify through ctypes (needs root).

``FanotifyReader`` marks the filesystems or directories that hold the watched roots, reads
``fanotify_event_metadata`` records on a thread of its own and hands each open, close-without-write
and close-after-write under a watched root to a callback as a ``FanotifyRecord``: path, pid, and
the process name, executable, uid and user name, looked up in /proc as soon as the record is read
(short-lived processes vanish; what was learnt of a pid is kept for its later records). A full
kernel queue (``FAN_Q_OVERFLOW``) is reported to ``on_overflow``: the caller emits
``agent.capture_gap`` and rescans. ``FanotifyEventMapper`` turns records into ``FileEvent``s.

Which marks (``marks=``):

* ``"mount"`` (default): one ``FAN_MARK_MOUNT`` per mount holding a root, filtered by path here.
  Robust: sees every directory created, moved in or renamed below a root at once, with no window
  in which a new subdirectory is unwatched. It costs a readlink per open on the whole mount.
* ``"directory"``: one mark per existing directory below the roots (directory marks are not
  recursive); new directories must be added with ``watch_directory``, and what happens in one
  before that call is missed. Cheaper on a busy mount; use it when the roots are small.

Held events (permission class, only when asked for): ``hold_execs`` holds each program start on
the filesystems named until the new process is noted, which is how a ``cat`` that exits
microseconds after its read is still named, at the cost of one round trip per process;
``hold_roots`` holds every open under the folders named (one round trip per open: a ``grep -r``
through a held folder runs ~25 times slower, which is why the agent itself holds execs instead).
Every held event is answered (allow) in a ``finally``; a reader that dies closes its group, and
the kernel then allows whatever was held.

This module must never read the files it reports (only the descriptor's link is looked at), never
deny an open or exec, and never report the agent's own pid: the agent reading a sensitive file to
fingerprint it is not a user's read.

Exceptions::

    OSError
    └── FanotifyError     fanotify cannot be used here: not Linux, not root, the kernel refused
                          a call; ``errno`` says why (EPERM: run as root or fall back to watchdog).
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import ctypes.util
import errno
import fcntl
import logging
import os
import pwd
import queue
import select
import struct
import sys
import termios
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, NamedTuple

from agent.core.events import FileEvent
from agent.sources.proc_forks import ForkWatch

try:  # the exec holder in C (agent/sources/_execheld.c), built at install where a compiler exists
    from agent.sources import _execheld
except ImportError:  # pragma: no cover - the Python holder does the same, with the GIL
    _execheld = None  # type: ignore[assignment]

__all__ = [
    "FanotifyError",
    "FanotifyEventMapper",
    "FanotifyReader",
    "FanotifyRecord",
    "RecordKind",
    "fanotify_available",
    "native_exec_holder",
]

log = logging.getLogger(__name__)

# linux/fanotify.h
FAN_CLOSE_WRITE = 0x00000008
FAN_CLOSE_NOWRITE = 0x00000010
FAN_OPEN = 0x00000020
FAN_Q_OVERFLOW = 0x00004000
FAN_OPEN_PERM = 0x00010000
FAN_OPEN_EXEC_PERM = 0x00040000
FAN_CLASS_CONTENT = 0x00000004
FAN_ALLOW = 0x01
FAN_EVENT_ON_CHILD = 0x08000000
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_NOTIF = 0x00000000
FAN_UNLIMITED_QUEUE = 0x00000010
FAN_MARK_ADD = 0x00000001
FAN_MARK_DONT_FOLLOW = 0x00000004
FAN_MARK_ONLYDIR = 0x00000008
FAN_MARK_MOUNT = 0x00000010
FAN_MARK_FILESYSTEM = 0x00000100
FAN_NOFD = -1
FANOTIFY_METADATA_VERSION = 3
_AT_FDCWD = -100

_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_RESPONSE = struct.Struct("=iI")  # struct fanotify_response: fd, response
_EVENT_MASK = FAN_OPEN | FAN_CLOSE_NOWRITE | FAN_CLOSE_WRITE
_READ_SIZE = 256 * 1024  # ~10,000 records per read() when a burst has queued them
_BATCH = 256  # records per hand-over to the delivery thread
# a backlog growing by this much per batch_wait is a burst in progress (~40 records in 20 ms,
# 2,000 a second); the reader waits for its end up to _GATHER_MAX_S
_GROWING_BYTES = 40 * _METADATA.size
_GATHER_MAX_S = 0.25

RecordKind = Literal["open", "close_nowrite", "close_write"]
_KIND_BITS: tuple[tuple[int, RecordKind], ...] = (
    (FAN_OPEN, "open"),
    (FAN_CLOSE_NOWRITE, "close_nowrite"),
    (FAN_CLOSE_WRITE, "close_write"),
)


class FanotifyError(OSError):
    """fanotify cannot be used here; ``errno`` says why."""


class FanotifyRecord(NamedTuple):
    """One open or close of a file under a watched root, attributed to a process and user.

    A named tuple, not a frozen dataclass: two are made per read (its open and its close), and a
    frozen dataclass costs four times as much to build (~1.2 vs ~0.3 us)."""

    path: str  # os.fsdecode()d; " (deleted)" ends it if the file was unlinked meanwhile
    kind: RecordKind
    pid: int
    uid: int  # -1 when the process was gone before it could be looked up
    user: str
    process: str  # /proc/PID/comm
    exe: str
    time_ns: int  # when the agent read the record (fanotify carries no timestamp)
    parent: int = 0  # forked without exec and gone before its look-up: named after this pid


@dataclass(frozen=True, slots=True)
class _Process:
    uid: int
    user: str
    process: str
    exe: str
    start: int = -1  # /proc/PID/stat starttime: tells this process from a later one with its pid
    confirmed: bool = True  # False: learnt at exec, before the new program ran (comm not final)
    parent: int = 0  # the identity is this parent's (see ForkWatch)


_UNKNOWN = _Process(-1, "", "", "")


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot, or -1 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return -1
    # comm (field 2) may hold spaces and parentheses: the fields after the last ")" are plain
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return int(fields[19])  # field 22, starttime
    except (IndexError, ValueError):
        return -1


def native_exec_holder() -> bool:
    """Tells whether held program starts are answered in C (without the GIL) here."""
    return _execheld is not None


def _normal_priority() -> None:
    """Raises the calling thread back to nice 0 if the agent runs niced (root may)."""
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) > 0:
            os.setpriority(os.PRIO_PROCESS, tid, 0)
    except OSError:
        pass


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    libc.fanotify_init.restype = ctypes.c_int
    libc.fanotify_mark.argtypes = [
        ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p,
    ]
    libc.fanotify_mark.restype = ctypes.c_int
    return libc


def fanotify_available() -> bool:
    """Tells whether this process can create a fanotify group (Linux, root or CAP_SYS_ADMIN)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = _libc()
        fd = libc.fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, os.O_RDONLY)
    except (OSError, AttributeError):
        return False
    if fd < 0:
        return False
    os.close(fd)
    return True


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "backslashreplace").strip()
    except OSError:
        return ""


class FanotifyReader:
    """Reads attributed opens and closes under ``roots`` on a thread; ``start()``/``stop()``."""

    def __init__(
        self,
        roots: Iterable[str | os.PathLike[str]],
        on_record: Callable[[FanotifyRecord], None],
        *,
        on_overflow: Callable[[], None] = lambda: None,
        marks: Literal["mount", "filesystem", "directory"] = "mount",
        ignore_pids: Iterable[int] = (),
        unlimited_queue: bool = False,
        poll_timeout: float = 0.5,
        batch_wait: float = 0.0,
        hold_roots: Iterable[str | os.PathLike[str]] = (),
        hold_execs: Iterable[str | os.PathLike[str]] = (),
        max_pending: int = 200_000,
        track_forks: bool = False,
        native_execs: bool = True,
        write_only_roots: Iterable[str | os.PathLike[str]] = (),
        native_reads: bool = True,
    ) -> None:
        """``hold_roots``: folders whose files' opens are held (FAN_OPEN_PERM) until the opener is
        looked up, so that even a process that exits at once (cp, cat) is named. Keep them to the
        sensitive folders: every open there waits for this reader's answer.

        Records are handed to ``on_record`` by a delivery thread of their own, through a queue of
        ``max_pending``: the reader thread itself never waits for a callback, so held opens are
        always answered even while the callback is blocked (on a full queue downstream that waits,
        in turn, for a held open of the agent's own: that would be a deadlock). A full delivery
        queue loses records; each loss is counted in ``lost`` and reported through ``on_overflow``.

        ``hold_execs``: paths whose filesystems' program starts are held (FAN_OPEN_EXEC_PERM) until
        the new process is noted (pid, start time, uid, program): a process that opens a file and
        exits at once is then named from that note, although its opens are never held. Program
        starts are held by a group of their own, answered by a thread of their own, so they never
        wait behind file records; without ``hold_roots`` the file records' reader may then wait
        for the delivery queue instead of losing records (with ``unlimited_queue`` the kernel
        keeps what is not read yet), and may wait ``batch_wait`` seconds after each drain so that
        a burst is read in large reads, an open and its close often merged into one record. One held
        exec per process instead of one held open per file: a ``grep -r`` costs one round trip,
        not one per file. Processes are cached by pid and start time, so a known opener costs no
        /proc look-up beyond one start-time check per pid per read.

        ``track_forks``: learn every fork from the kernel (``ForkWatch``), so that a process that
        forks without exec, opens a file and exits before its record is read is named after its
        parent (``parent`` in its records) instead of by pid alone.

        ``native_execs``: answer held program starts on a C thread that never takes the GIL
        (``agent/sources/_execheld.c``, when built), so an exec anywhere on the machine never waits
        for the interpreter, however busy or low-priority the agent's Python threads are; the
        notes it takes are applied here, by the same rules, before the records that follow them.

        ``native_reads``: read the records in C (``_execheld.read_records``, when built and nothing
        is held but execs): the read, each record's path and the closing of its descriptor happen
        without the GIL, and what reaches Python is already filtered to the roots; records are
        handed to the delivery thread a batch at a time. Same records, same rules.

        ``write_only_roots`` (with ``marks="directory"``): roots, among ``roots``, whose directories
        report close-after-write only (destinations: what is read there is nobody's business, and
        each open not asked for is work in the user's process and in this reader)."""
        # batches of records (at most _BATCH each), so max_pending records at most wait in it; with
        # held opens one record a batch, so that a full queue loses as few as it can
        self._batch = 1 if hold_roots else _BATCH
        self._deliveries: queue.Queue[list[FanotifyRecord] | None] = queue.Queue(
            maxsize=max(1, max_pending // self._batch))
        self._native_reads = native_reads and _execheld is not None and not hold_roots
        self._roots_raw: tuple[tuple[str, ...], tuple[bytes, ...]] = ((), ())
        self._delivery: threading.Thread | None = None
        self.lost = 0
        self._hold_roots = tuple(os.path.normpath(os.fspath(r)) for r in hold_roots)
        self._hold_execs = tuple(os.path.normpath(os.fspath(r)) for r in hold_execs)
        self._held_execs = 0
        self.held = 0
        self._stop_requested = False
        self._roots = tuple(os.path.normpath(os.fspath(r)) for r in roots)
        self._write_only = frozenset(os.path.normpath(os.fspath(r)) for r in write_only_roots)
        self._on_record = on_record
        self._on_overflow = on_overflow
        self._marks = marks
        self._ignore = frozenset(ignore_pids) | {os.getpid()}
        self._unlimited = unlimited_queue
        self._poll_ms = int(poll_timeout * 1000)
        self._batch_wait = batch_wait
        self._fd = -1
        self._exec_fd = -1
        self._exec_thread: threading.Thread | None = None
        self._native_execs = native_execs and _execheld is not None
        self._holder: _execheld.ExecHolder | None = None  # the C holder, once started; it owns the exec group
        self._cache_lock = threading.Lock()  # the exec thread and the reader share the cache
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._processes: collections.OrderedDict[int, _Process] = collections.OrderedDict()
        self._users: dict[int, str] = {}
        self._libc: ctypes.CDLL | None = None
        self._track_forks = track_forks
        self._forks: ForkWatch | None = None
        self.overflows = 0
        self.records = 0
        self.dropped_fds = 0  # events whose descriptor the kernel could not open for us

    @property
    def is_running(self) -> bool:
        """True while the reader thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Creates the fanotify group, marks the roots and starts the reader thread."""
        if self._thread is not None:
            raise RuntimeError("FanotifyReader already started")
        if not sys.platform.startswith("linux"):
            raise FanotifyError(errno.ENOSYS, "fanotify exists on Linux only")
        self._libc = _libc()
        flags = (FAN_CLASS_CONTENT if self._hold_roots else FAN_CLASS_NOTIF) | FAN_CLOEXEC | FAN_NONBLOCK
        if self._unlimited:
            flags |= FAN_UNLIMITED_QUEUE
        self._fd = self._group(flags)
        if self._hold_execs:
            try:
                self._exec_fd = self._group(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK)
            except BaseException:
                os.close(self._fd)
                self._fd = -1
                raise
        try:
            for root in self._roots:
                if self._marks == "directory":
                    for dirpath, _dirs, _files in os.walk(root):
                        self.watch_directory(dirpath, writes_only=root in self._write_only)
                else:
                    how = FAN_MARK_MOUNT if self._marks == "mount" else FAN_MARK_FILESYSTEM
                    self._mark(root, how, _EVENT_MASK)
            for root in self._hold_roots:
                for dirpath, _dirs, _files in os.walk(root):
                    self.hold_directory(dirpath)
            self._mark_execs()
            if self._track_forks:
                try:
                    self._forks = ForkWatch()
                except OSError as exc:
                    log.warning("forks cannot be followed (%s): a process that forks without exec and "
                                "exits at once is named by pid only", exc)
        except BaseException:
            for fd in (self._fd, self._exec_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._exec_fd = -1
            raise
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping.clear()
        self._delivery = threading.Thread(target=self._deliver, name="fanotify-delivery", daemon=True)
        self._delivery.start()
        if self._exec_fd >= 0 and self._native_execs:
            holder = _execheld.ExecHolder(self._exec_fd)
            holder.start()  # from here on it closes the group itself
            self._holder, self._exec_fd = holder, -1
        elif self._exec_fd >= 0:
            self._exec_thread = threading.Thread(target=self._run_execs, name="fanotify-execs", daemon=True)
            self._exec_thread.start()
        self._thread = threading.Thread(target=self._run, name="fanotify-reader", daemon=True)
        self._thread.start()

    def _group(self, flags: int) -> int:
        assert self._libc is not None
        fd = int(self._libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise FanotifyError(err, f"fanotify_init: {os.strerror(err)} (needs root)")
        return fd

    def _mark_execs(self) -> None:
        seen: set[int] = set()
        for path in self._hold_execs:
            try:
                dev = os.stat(path).st_dev
            except OSError:
                continue
            if dev in seen:
                continue
            seen.add(dev)
            try:
                self._mark(path, FAN_MARK_FILESYSTEM, FAN_OPEN_EXEC_PERM, group=self._exec_fd)
            except FanotifyError:
                # some filesystems (overlay, FUSE) refuse filesystem marks; their mount will do
                self._mark(path, FAN_MARK_MOUNT, FAN_OPEN_EXEC_PERM, group=self._exec_fd)

    def watch_directory(self, path: str | os.PathLike[str], *, writes_only: bool = False) -> None:
        """Marks one more directory (``marks="directory"``): its files' events are reported (only
        close-after-write with ``writes_only``; marks add up, so a directory also marked in full
        keeps its full mask)."""
        mask = FAN_CLOSE_WRITE if writes_only else _EVENT_MASK
        self._mark(os.fspath(path), FAN_MARK_ONLYDIR, mask | FAN_EVENT_ON_CHILD)

    def add_root(self, path: str | os.PathLike[str], *, hold: bool = False) -> None:
        """Watches one more root while running (a sensitive folder that appeared since start)."""
        root = os.path.normpath(os.fspath(path))
        if self._marks == "directory":
            for dirpath, _dirs, _files in os.walk(root):
                self.watch_directory(dirpath)
        else:
            self._mark(root, FAN_MARK_MOUNT if self._marks == "mount" else FAN_MARK_FILESYSTEM, _EVENT_MASK)
        if hold and self._hold_roots:
            for dirpath, _dirs, _files in os.walk(root):
                self.hold_directory(dirpath)
        self._roots = (*self._roots, root)  # one assignment: the reader thread sees old or new

    def hold_directory(self, path: str | os.PathLike[str]) -> None:
        """Holds opens of one more directory's files until their opener is looked up."""
        if self._hold_roots:
            self._mark(os.fspath(path), FAN_MARK_ONLYDIR, FAN_OPEN_PERM | FAN_EVENT_ON_CHILD)

    def _mark(self, path: str, how: int, mask: int, *, group: int | None = None) -> None:
        assert self._libc is not None
        flags = FAN_MARK_ADD | FAN_MARK_DONT_FOLLOW | how
        fd = self._fd if group is None else group
        if self._libc.fanotify_mark(fd, flags, mask, _AT_FDCWD, os.fsencode(path)) < 0:
            err = ctypes.get_errno()
            raise FanotifyError(err, f"fanotify_mark {path!r}: {os.strerror(err)}")

    def stop(self) -> None:
        """Stops the reader thread promptly and closes the group; safe to call twice."""
        thread = self._thread
        if thread is None:
            return
        self._stop_requested = True
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        thread.join()
        self._thread = None
        if self._holder is not None:
            self._holder.stop()
            self._take_notes()
        if self._exec_thread is not None:
            self._exec_thread.join()
            self._exec_thread = None
        if self._delivery is not None:
            self._deliveries.put(None)  # after every record read so far: they are delivered first
            self._delivery.join()
            self._delivery = None
        for fd in (self._fd, self._exec_fd, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._fd = self._exec_fd = self._wake_r = self._wake_w = -1
        if self._forks is not None:
            self._forks.close()
            self._forks = None

    @property
    def held_execs(self) -> int:
        """Program starts held and answered so far."""
        if self._holder is not None:
            return int(self._holder.held)
        return self._held_execs

    @property
    def exec_notes_lost(self) -> int:
        """Program starts answered without a note (the C holder's ring was full)."""
        return int(self._holder.lost) if self._holder is not None else 0

    def _take_notes(self) -> None:
        """Applies the C holder's notes, oldest first: called before each batch of records."""
        holder = self._holder
        if holder is None:
            return
        for pid, uid, start, program in holder.drain():
            self._noted(pid, uid, start, os.fsdecode(program))

    @property
    def forks_lost(self) -> int:
        """How often the fork messages overflowed (forks then unknown), 0 without ``track_forks``."""
        return self._forks.lost if self._forks is not None else 0

    def _run(self) -> None:
        try:
            poller = select.poll()
            poller.register(self._fd, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            # Forks are not polled for (each would wake this thread: thousands a second in a
            # build); their socket buffer holds them until the next records or poll timeout.
            forks = self._forks
            if self._holder is not None:
                poller.register(self._holder.notify_fd, select.POLLIN)
            while not self._stopping.is_set():
                ready = poller.poll(self._poll_ms)
                if self._stopping.is_set():
                    return
                if forks is not None:
                    forks.drain()  # before the records: a fork is told before its child runs
                self._take_notes()
                if any(fd == self._fd for fd, _ in ready):
                    self._drain(self._fd)  # at once: a lone record is read as it comes
                    if self._batch_wait > 0 and not self._hold_roots:
                        self._gather()  # then, in a burst, large reads after its end
        except Exception:
            log.exception("the fanotify reader failed")
        finally:
            self._release_if_dead(exec_group=False)

    def _backlog(self) -> int:
        """Bytes of records the kernel holds for this group (FIONREAD), -1 if it cannot say."""
        try:
            return int(struct.unpack("i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0"))[0])
        except OSError:
            return -1

    def _gather(self) -> None:
        """Nothing waits for this reader: lets a burst gather into large reads, and while the
        kernel's backlog keeps growing fast (a user's ``tar`` or ``grep -r`` at work) waits for it
        to end, up to ``_GATHER_MAX_S``: the records are read after the burst instead of
        competing with it for the CPU, and none is lost (the kernel queue is unlimited; held
        execs are answered in C meanwhile, and their notes taken here)."""
        deadline = time.monotonic() + _GATHER_MAX_S
        last = self._backlog()
        while not self._stopping.wait(self._batch_wait):
            self._take_notes()
            size = self._backlog()
            if size < 0 or size - last < _GROWING_BYTES or time.monotonic() >= deadline:
                return
            last = size

    def _run_execs(self) -> None:
        try:
            _normal_priority()  # every exec on the machine waits for this thread
            poller = select.poll()
            poller.register(self._exec_fd, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            while not self._stopping.is_set():
                ready = poller.poll(self._poll_ms)
                if self._stopping.is_set():
                    return
                if any(fd == self._exec_fd for fd, _ in ready):
                    self._drain(self._exec_fd)
        except Exception:
            log.exception("the fanotify exec holder failed")
        finally:
            self._release_if_dead(exec_group=True)

    def _release_if_dead(self, *, exec_group: bool) -> None:
        # A thread that stops for any reason other than stop() must not leave held events waiting
        # for an answer that will never come: closing the group makes the kernel allow them.
        if self._stop_requested:
            return
        if exec_group and self._exec_fd >= 0:
            log.error("the fanotify exec holder stopped unexpectedly; releasing held program starts")
            fd, self._exec_fd = self._exec_fd, -1
            os.close(fd)
        elif not exec_group and self._hold_roots and self._fd >= 0:
            log.error("the fanotify reader stopped unexpectedly; releasing held opens")
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _drain(self, group: int) -> None:
        if group == self._fd and self._native_reads:
            self._drain_native()
            return
        while not self._stopping.is_set():
            try:
                buf = os.read(group, _READ_SIZE)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if not buf:
                return
            if group == self._fd:
                self._take_notes()  # each exec noted before its process's records were queued
            self._parse(buf, group)

    def _drain_native(self) -> None:
        """As ``_drain`` + ``_parse`` for the records' group, with the per-record system calls in C."""
        assert _execheld is not None
        ignore = tuple(self._ignore)
        while not self._stopping.is_set():
            roots = self._roots
            if self._roots_raw[0] is not roots:
                self._roots_raw = (roots, tuple(os.fsencode(r) for r in roots))
            got = _execheld.read_records(self._fd, self._roots_raw[1], ignore, _READ_SIZE)
            if got is None:
                return
            records, overflows, dropped, now, bad = got
            self._take_notes()  # each exec noted before its process's records were queued
            self.dropped_fds += dropped
            for _ in range(overflows):
                self.overflows += 1
                try:
                    self._on_overflow()
                except Exception:  # a callback's bug must not stop capture
                    log.exception("fanotify overflow handler failed")
            checked: set[int] = set()
            batch: list[FanotifyRecord] = []
            for mask, pid, path in records:
                try:
                    proc = self._identify(pid, checked)
                except Exception:  # pragma: no cover - a look-up's bug must not stop capture
                    log.exception("fanotify record handler failed")
                    continue
                for bit, kind in _KIND_BITS:
                    if mask & bit:
                        self.records += 1
                        batch.append(FanotifyRecord(path, kind, pid, proc.uid, proc.user, proc.process, proc.exe,
                                                    now, proc.parent))
                if len(batch) >= _BATCH:
                    self._hand_on(batch)
                    batch = []
            if batch:
                self._hand_on(batch)
            if bad:
                log.error("fanotify metadata version not %d; stopping the reader", FANOTIFY_METADATA_VERSION)
                self._stopping.set()
                return

    def _parse(self, buf: bytes, group: int) -> None:
        offset = 0
        checked: set[int] = set()  # pids whose start time was checked in this read
        batch: list[FanotifyRecord] = []
        while offset + _METADATA.size <= len(buf):
            event_len, vers, _, _meta_len, mask, fd, pid = _METADATA.unpack_from(buf, offset)
            if vers != FANOTIFY_METADATA_VERSION or event_len < _METADATA.size:
                log.error("fanotify metadata version %d; stopping the reader", vers)
                self._stopping.set()
                return
            offset += event_len
            try:
                self._handle(mask, fd, pid, checked, group, batch)
            except Exception:  # a callback's bug must not stop capture
                log.exception("fanotify record handler failed")
        if batch:
            self._hand_on(batch)

    def _handle(self, mask: int, fd: int, pid: int, checked: set[int], group: int,
                batch: list[FanotifyRecord]) -> None:
        if mask & (FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM):
            # The opener waits for our answer: note it while it surely exists, then let it go.
            # Always answer (the finally), whatever happens: an unanswered open hangs its process.
            try:
                if pid not in self._ignore:
                    if mask & FAN_OPEN_EXEC_PERM:
                        self._note_exec(pid, fd)
                        self._held_execs += 1
                    else:
                        self._identify(pid, checked)
                        self.held += 1
            finally:
                try:
                    os.write(group, _RESPONSE.pack(fd, FAN_ALLOW))
                finally:
                    os.close(fd)
            return
        now = time.time_ns()
        if mask & FAN_Q_OVERFLOW:
            self.overflows += 1
            self._on_overflow()
            return
        if fd < 0:
            self.dropped_fds += 1
            return
        try:
            if pid in self._ignore:
                return
            try:
                raw = os.readlink(b"/proc/self/fd/%d" % fd)
            except OSError:
                self.dropped_fds += 1
                return
        finally:
            os.close(fd)
        path = os.fsdecode(raw)
        if not self._wanted(path):
            return
        proc = self._identify(pid, checked)
        for bit, kind in _KIND_BITS:
            if mask & bit:
                self.records += 1
                batch.append(FanotifyRecord(path, kind, pid, proc.uid, proc.user, proc.process, proc.exe, now,
                                            proc.parent))
                if len(batch) >= self._batch:
                    self._hand_on(batch.copy())
                    batch.clear()

    def _hand_on(self, batch: list[FanotifyRecord]) -> None:
        if not self._hold_roots:
            # Nothing waits for this thread: wait for room (the kernel queue keeps the rest).
            while not self._stopping.is_set():
                try:
                    self._deliveries.put(batch, timeout=0.5)
                    return
                except queue.Full:
                    continue
        try:
            self._deliveries.put_nowait(batch)
        except queue.Full:
            self.lost += len(batch)
            self._on_overflow()

    def _deliver(self) -> None:
        on_record = self._on_record
        while True:
            batch = self._deliveries.get()
            if batch is None:
                return
            for record in batch:
                try:
                    on_record(record)
                except Exception:  # a callback's bug must not stop delivery
                    log.exception("fanotify record handler failed")

    def _wanted(self, path: str) -> bool:
        for root in self._roots:
            if path == root or path.startswith(root + "/") or root == "/":
                return True
        return False

    def _note_exec(self, pid: int, fd: int) -> None:
        """A program start, held: the process is noted under the program it is about to run (its
        comm and exe still name the old one), to be confirmed by a look-up once it runs."""
        try:
            program = os.fsdecode(os.readlink(b"/proc/self/fd/%d" % fd))
        except OSError:
            return
        uid = self._uid(pid)
        start = _start_time(pid)
        if uid < 0 or start < 0:
            return
        self._noted(pid, uid, start, program)

    def _noted(self, pid: int, uid: int, start: int, program: str) -> None:
        name = os.path.basename(program)
        with self._cache_lock:
            noted = self._processes.get(pid)
        if (noted is not None and not noted.confirmed and noted.start == start and noted.uid == uid
                and name.startswith(("ld-linux", "ld.so", "ld-musl"))):
            return  # the same exec opening its ELF loader: still the program noted
        # Anything else is a new program, even in the same process (setpriv or sudo exec'ing the
        # command after changing uid; a script's interpreter, named as /proc/PID/exe would).
        self._remember(pid, _Process(uid, self._user(uid), name[:15], program, start, confirmed=False))

    def _identify(self, pid: int, checked: set[int]) -> _Process:
        """Who ``pid`` is: from the cache when it is still the process cached (same start time),
        checked once per pid per read; otherwise looked up in /proc."""
        with self._cache_lock:
            cached = self._processes.get(pid)
        if cached is not None and pid in checked:
            return cached
        checked.add(pid)
        if cached is not None:
            start = _start_time(pid)
            if start < 0 or (start == cached.start and cached.confirmed):
                return cached  # the same live process, or gone: what we learnt is the best we know
        return self._process(pid)

    def _uid(self, pid: int) -> int:
        for line in _read_text(f"/proc/{pid}/status").splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])  # real uid: who ran it, even through setuid
        return -1

    def _remember(self, pid: int, found: _Process) -> None:
        with self._cache_lock:
            self._processes[pid] = found
            self._processes.move_to_end(pid)
            if len(self._processes) > 4096:
                self._processes.popitem(last=False)

    def _process(self, pid: int) -> _Process:
        base = f"/proc/{pid}"
        start = _start_time(pid)
        process = _read_text(f"{base}/comm")
        uid = self._uid(pid)
        try:
            exe = os.fsdecode(os.readlink(f"{base}/exe"))
        except OSError:
            exe = ""
        with self._cache_lock:
            cached = self._processes.get(pid)
        if uid < 0 or not process:
            # Gone already: what an earlier record of this pid taught us is the best we know, or,
            # for a child forked without exec, its parent (it was a copy of it).
            if cached is not None:
                return cached
            inherited = self._inherited(pid)
            if inherited is None:
                return _UNKNOWN
            self._remember(pid, inherited)
            return inherited
        if not exe and cached is not None and cached.process == process:
            # A zombie still has comm and status but no exe link; keep the one seen alive.
            exe = cached.exe
        elif not exe and (inherited := self._inherited(pid)) is not None and inherited.process == process:
            exe = inherited.exe  # a zombie forked without exec: its parent's program
        found = _Process(uid, self._user(uid), process, exe, start)
        self._remember(pid, found)
        return found

    def _inherited(self, pid: int) -> _Process | None:
        """The identity of the nearest ancestor of ``pid`` still known (cached, alive, or itself
        forked from one), for a process forked without exec; None when no fork of it was seen."""
        forks = self._forks
        if forks is None:
            return None
        for _ in range(16):  # a chain of forks, bounded (reused pids could make a loop)
            parent = forks.parent(pid)
            if parent <= 0 or parent == pid:
                return None
            with self._cache_lock:
                known = self._processes.get(parent)
            if known is None:
                known = self._look_up(parent)
            if known is not None:
                return dataclasses.replace(known, start=-1, confirmed=True, parent=known.parent or parent)
            pid = parent
        return None

    def _look_up(self, pid: int) -> _Process | None:
        """A live process as /proc tells it, or None when it is gone (nothing cached for it)."""
        uid = self._uid(pid)
        process = _read_text(f"/proc/{pid}/comm")
        if uid < 0 or not process:
            return None
        try:
            exe = os.fsdecode(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            exe = ""
        return _Process(uid, self._user(uid), process, exe, _start_time(pid))

    def _user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name


class FanotifyEventMapper:
    """Turns records into domain events: open + close_nowrite is a file.read, close_write a
    file.write. Opens are remembered (boundedly) to give a read its duration."""

    def __init__(self, *, max_open: int = 65_536) -> None:
        self._opened: collections.OrderedDict[tuple[int, str], int] = collections.OrderedDict()
        self._max_open = max_open

    def map(self, record: FanotifyRecord) -> FileEvent | None:
        """Returns the event a record completes, or None for an open (its close will say)."""
        key = (record.pid, record.path)
        if record.kind == "open":
            self._opened[key] = record.time_ns
            self._opened.move_to_end(key)
            if len(self._opened) > self._max_open:
                self._opened.popitem(last=False)
            return None
        opened = self._opened.pop(key, None)
        attributes: dict[str, object] = {"attribution": "fanotify"}
        if record.parent:
            attributes["identity_of_parent"] = record.parent  # forked without exec, gone at once
        if opened is not None:
            attributes["open_ms"] = round((record.time_ns - opened) / 1e6, 3)
        return FileEvent(
            kind="file.read" if record.kind == "close_nowrite" else "file.write",
            time_unix_ns=record.time_ns,
            path=record.path,
            user=record.user,
            uid=record.uid,
            pid=record.pid,
            process=record.process,
            exe=record.exe,
            attributes=attributes,
        )
