"""Which process forked which, from the kernel's process events connector (Linux, root).

A process that forks *without* exec (a Python worker, a shell subshell, ``make``'s children before
their exec) starts as a copy of its parent: same program, name and user. Held program starts
never see it, and if it opens a sensitive file and exits at once, /proc has forgotten it by the
time its fanotify record is read. ``ForkWatch`` subscribes to the proc connector (netlink,
``PROC_EVENT_FORK``) and keeps a bounded map child pid -> parent pid, so such a process is named
after its parent. The kernel sends a fork's message before the child runs, so once ``drain()`` has
read the socket, every child whose record has been read is known (unless the socket overflowed:
``lost`` counts such overflows, and the process is then named by pid only, as before).

Only process forks are kept (a new thread's fork message has ``child_pid != child_tgid``). Since
Linux 6.6 the subscription asks the kernel to send forks only; older kernels send every process
event and the rest are skipped here. This module must never act on a process, only learn of it.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

__all__ = ["ForkWatch", "parse_forks"]

_NETLINK_CONNECTOR = 11
_CN_IDX_PROC = 1
_CN_VAL_PROC = 1
_NLMSG_DONE = 3
_PROC_CN_MCAST_LISTEN = 1
_PROC_EVENT_FORK = 0x00000001
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_FORK = struct.Struct("=iiii")  # parent_pid, parent_tgid, child_pid, child_tgid
_FORK_AT = _NLMSG.size + _CN_MSG.size + _EVENT_HEAD.size


def parse_forks(buf: bytes) -> list[tuple[int, int]]:
    """The (child tgid, parent tgid) of each process fork in one netlink read; other events and
    thread creations are skipped."""
    out: list[tuple[int, int]] = []
    offset = 0
    while offset + _NLMSG.size <= len(buf):
        length = _NLMSG.unpack_from(buf, offset)[0]
        if length < _NLMSG.size:
            break
        if length >= _FORK_AT + _FORK.size and offset + length <= len(buf):
            what = _EVENT_HEAD.unpack_from(buf, offset + _NLMSG.size + _CN_MSG.size)[0]
            if what == _PROC_EVENT_FORK:
                _ppid, parent_tgid, child_pid, child_tgid = _FORK.unpack_from(buf, offset + _FORK_AT)
                if child_pid == child_tgid:
                    out.append((child_tgid, parent_tgid))
        offset += (length + 3) & ~3  # NLMSG_ALIGN
    return out


def _kernel_filters() -> bool:
    try:
        major, minor = (int(part) for part in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (6, 6)


class ForkWatch:
    """child pid -> parent pid for the latest ``capacity`` process forks; ``drain()`` from one thread."""

    def __init__(self, *, capacity: int = 32_768, receive_buffer: int = 8 << 20) -> None:
        """Subscribes to the proc connector; raises OSError where it cannot (not root, no
        CONFIG_PROC_EVENTS)."""
        self.capacity = capacity
        self.lost = 0  # socket overflows: forks the kernel could not tell us
        self.forks = 0
        self._parents: dict[int, int] = {}
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _NETLINK_CONNECTOR)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, receive_buffer)  # SO_RCVBUFFORCE (root)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.bind((0, _CN_IDX_PROC))
            # Linux >= 6.6 reads struct proc_input {op, event mask}: forks only; older ones the op.
            op = struct.pack("=II", _PROC_CN_MCAST_LISTEN, _PROC_EVENT_FORK) if _kernel_filters() else struct.pack(
                "=I", _PROC_CN_MCAST_LISTEN)
            cn = _CN_MSG.pack(_CN_IDX_PROC, _CN_VAL_PROC, 0, 0, len(op), 0) + op
            sock.send(_NLMSG.pack(_NLMSG.size + len(cn), _NLMSG_DONE, 0, 0, 0) + cn)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def fileno(self) -> int:
        """The socket, to poll for readability."""
        return self._sock.fileno()

    def drain(self) -> None:
        """Reads every fork message the kernel has queued so far."""
        parents = self._parents
        while True:
            try:
                buf = self._sock.recv(65536)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1  # the buffer overflowed: some forks are unknown
                    continue
                raise
            if not buf:
                return
            for child, parent in parse_forks(buf):
                parents.pop(child, None)  # a reused pid: the newest fork is the one that counts
                parents[child] = parent
                self.forks += 1
            while len(parents) > self.capacity:
                del parents[next(iter(parents))]

    def parent(self, pid: int) -> int:
        """The pid that forked ``pid`` (0 if no fork of it was seen); drains first."""
        self.drain()
        return self._parents.get(pid, 0)

    def close(self) -> None:
        """Unsubscribes."""
        self._sock.close()
