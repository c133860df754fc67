"""Forks from the proc connector: the message parser (pure) and a real subscription (root)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from agent.sources.proc_forks import ForkWatch, parse_forks


def _message(what: int, payload: bytes) -> bytes:
    body = struct.pack("=IIIIHH", 1, 1, 0, 0, 16 + len(payload), 0) + struct.pack("=IIQ", what, 0, 123) + payload
    length = 16 + len(body)
    return struct.pack("=IHHII", length, 3, 0, 0, 0) + body + b"\0" * (-length % 4)


def test_only_process_forks_are_kept() -> None:
    fork = _message(1, struct.pack("=iiii", 100, 100, 200, 200))
    thread = _message(1, struct.pack("=iiii", 100, 100, 201, 100))  # a new thread of process 100
    exit_ = _message(0x80000000, struct.pack("=iiIIii", 200, 200, 0, 17, 100, 100))
    fork2 = _message(1, struct.pack("=iiii", 300, 300, 301, 301))
    assert parse_forks(fork + thread + exit_ + fork2) == [(200, 100), (301, 300)]
    assert parse_forks(fork[:20]) == [] and parse_forks(b"") == []


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for the proc connector")
def test_a_real_fork_is_told_before_its_parent_can_reap_it() -> None:
    watch = ForkWatch()
    try:
        done = subprocess.run([sys.executable, "-c", "import os\npid = os.fork()\nif pid == 0: os._exit(0)\n"
                               "os.waitpid(pid, 0)\nprint(pid)"], capture_output=True, check=True)
        child = int(done.stdout)
        forker = watch.parent(child)  # the python that forked it, a child of this process
        assert forker > 0 and watch.parent(forker) == os.getpid()
        assert watch.parent(os.getpid()) == 0  # forked before the watch began
        assert watch.lost == 0
    finally:
        watch.close()
