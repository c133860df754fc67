"""Issue 3 end to end: a real collector and `shoumi-agent run --config`, real cat/cp/zip processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.e2e.conftest import Collector, eventually, run, stop, tool

needs_root = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for fanotify")]
SECRET = os.urandom(300_000)


@pytest.fixture
def world() -> Iterator[Path]:
    # Not under tmp_path: pytest's base directory is 0700, and `nobody` must reach the file.
    root = Path(tempfile.mkdtemp(prefix="shoumi-cap-"))
    root.chmod(0o755)
    for name in ("finance", "dest", "stick"):
        (root / name).mkdir(mode=0o755)
    (root / "finance" / "nda.bin").write_bytes(SECRET)
    (root / "finance" / "nda.bin").chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _config(path: Path, root: Path, **extra: str) -> Path:
    lines = [
        "[policy]",
        f'sensitive_folders = ["{root}/finance"]',
        f'destinations = ["{root}/dest"]',
        f'removable_mounts = ["{root}/stick"]',
        'exclude_paths = ["*.swp"]',
        "partial_match_share = 0.5",
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _enrolled(collector: Collector, tmp_path: Path) -> tuple[str, Path]:
    collector.start()
    collector.cli("user", "create", "--username", "ana", "--role", "security_analyst", "--password-stdin",
                  stdin="a long enough password\n")
    token = collector.cli("api-token", "create", "--username", "ana")
    state = tmp_path / "agent"
    collector.enroll_agent(state)
    return token, state


def _agent(state: Path, config: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(state.parent / "agent.log", "ab") as log:
        return subprocess.Popen(
            [tool("shoumi-agent"), "run", "--state-dir", str(state), "--config", str(config),
             "--attributed-user", "alice", "--heartbeat-seconds", "1", *extra],
            stdout=log, stderr=subprocess.STDOUT,
        )


def _wait(collector: Collector, token: str, match: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((e for e in collector.events(token) if match(e)), None)

    return eventually(found, timeout=30, what=what)  # type: ignore[no-any-return]


def _started(collector: Collector, token: str, tmp_path: Path) -> None:
    """Waits until the removable stand-in is watched and the first index is built (a heartbeat)."""
    log = tmp_path / "agent.log"
    _wait(collector, token, lambda e: e["kind"] == "usb.mount", f"usb.mount ({log.read_text() if log.exists() else ''})")
    _wait(collector, token, lambda e: e["kind"] == "agent.heartbeat" and e["attributes"].get("index_files", 0) >= 1,
          "the index")


def test_bad_policy_exits_2_with_the_key_named(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text('[policy]\nsensitive_folders = ["/srv/x"]\nsensitive_foldrs = ["/srv/y"]\n')
    done = run(tool("shoumi-agent"), "run", "--state-dir", str(tmp_path / "s"), "--config", str(bad), check=False)
    assert done.returncode == 2 and "sensitive_foldrs" in done.stderr and "unknown key" in done.stderr
    bad.write_text('[policy]\nsensitive_folders = ["/srv/[x"]\n')
    done = run(tool("shoumi-agent"), "run", "--state-dir", str(tmp_path / "s"), "--config", str(bad), check=False)
    assert done.returncode == 2 and "unclosed '['" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("capture", [pytest.param("fanotify", marks=needs_root), "inotify"])
def test_reads_copies_and_removable_writes_are_stored(
    collector: Collector, tmp_path: Path, world: Path, capture: str
) -> None:
    token, state = _enrolled(collector, tmp_path)
    agent = _agent(state, _config(tmp_path / "agent.toml", world), "--capture", capture)
    try:
        _started(collector, token, tmp_path)
        nda = world / "finance" / "nda.bin"
        applied = _wait(collector, token, lambda e: e["kind"] == "policy.applied", "policy.applied")
        assert applied["attributes"]["policy"]["sensitive_folders"] == [str(world / "finance")]

        if capture == "fanotify":
            subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", str(nda)],
                           stdout=subprocess.DEVNULL, check=True)
            read = _wait(collector, token, lambda e: e["kind"] == "file.read" and e["uid"] == 65534, "nobody's read")
            assert read["path"] == str(nda) and read["process"] == "cat" and collector.reveal(read["user"], token) == "nobody"
        else:
            subprocess.run(["cat", str(nda)], stdout=subprocess.DEVNULL, check=True)
            read = _wait(collector, token, lambda e: e["kind"] == "file.read", "a read")
            assert collector.reveal(read["user"], token) == "alice" and read["attributes"]["attribution"] == "session_user"

        subprocess.run(["cp", str(nda), str(world / "dest" / "copy.bin")], check=True)
        copy = _wait(collector, token, lambda e: e["kind"] == "file.copy" and e["dest_path"].endswith("copy.bin"),
                     "the exact copy")
        assert copy["attributes"]["source_paths"] == [str(nda)]
        assert copy["attributes"]["match"] == "exact" and copy["attributes"]["match_share"] == 1.0
        if capture == "fanotify":
            assert copy["process"] == "cp" and copy["attributes"]["read_by_same_process"] is True

        (world / "dest" / "part.bin").write_bytes(SECRET[: len(SECRET) * 7 // 10])
        part = _wait(collector, token, lambda e: e["kind"] == "file.copy" and e["dest_path"].endswith("part.bin"),
                     "the partial copy")
        assert part["attributes"]["match"] == "partial" and 0.5 <= part["attributes"]["match_share"] < 1.0

        with zipfile.ZipFile(world / "dest" / "out.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(nda, "nda.bin")
        zipped = _wait(collector, token, lambda e: e["kind"] == "file.copy" and e["dest_path"].endswith("out.zip"),
                       "the zip copy")
        assert zipped["attributes"]["match"] == "archive" and zipped["attributes"]["source_paths"] == [str(nda)]

        subprocess.run(["cp", str(nda), str(world / "stick" / "nda.bin")], check=True)
        (world / "stick" / "notes.txt").write_text("nothing sensitive")
        usb = _wait(collector, token, lambda e: e["kind"] == "usb.write" and e["path"].endswith("stick/nda.bin"),
                    "the usb.write")
        assert usb["attributes"]["match"] == "exact" and usb["attributes"]["source_paths"] == [str(nda)]
        plain = _wait(collector, token, lambda e: e["kind"] == "usb.write" and e["path"].endswith("notes.txt"),
                      "the plain usb.write")
        assert "match" not in plain["attributes"]
        (world / "dest" / "unrelated.txt").write_text("nothing sensitive")

        moving = world / "finance" / "to-move.bin"
        moving.write_bytes(SECRET[:40_000])
        _wait(collector, token, lambda e: e["kind"] == "file.write" and e["path"] == str(moving), "the write to move")
        time.sleep(0.5)  # let the content worker index it
        os.rename(moving, world / "dest" / "moved-out.bin")  # same filesystem: no copy, no close-write
        moved = _wait(collector, token, lambda e: e["kind"] == "file.move" and e["dest_path"].endswith("moved-out.bin"),
                      "the move out")
        assert moved["path"] == str(moving) and moved["attributes"]["moved_out"] is True
        assert moved["attributes"]["source_paths"] == [str(moving)]
    finally:
        assert stop(agent) == 0
    events = collector.events(token)
    assert not [e for e in events if e["path"].endswith("unrelated.txt") or e["dest_path"].endswith("unrelated.txt")]
    reads = [e for e in events if e["kind"] == "file.read"]
    # cat, cp, the zip writer and cp to the stick; the agent's own fingerprinting reads are not reported
    assert len(reads) == 4 and all(e["pid"] != agent.pid for e in reads), reads


@pytest.mark.slow
def test_changes_while_stopped_are_caught_up(collector: Collector, tmp_path: Path, world: Path) -> None:
    token, state = _enrolled(collector, tmp_path)
    config = _config(tmp_path / "agent.toml", world)
    agent = _agent(state, config)
    try:
        _started(collector, token, tmp_path)
    finally:
        assert stop(agent) == 0
    (world / "finance" / "nda.bin").write_bytes(b"changed while nobody watched")
    (world / "finance" / "new.txt").write_text("created while nobody watched")
    agent = _agent(state, config)
    try:
        changed = _wait(collector, token, lambda e: e["attributes"].get("catch_up") and e["kind"] == "file.write",
                        "the catch-up write")
        created = _wait(collector, token, lambda e: e["attributes"].get("catch_up") and e["kind"] == "file.create",
                        "the catch-up create")
    finally:
        assert stop(agent) == 0
    assert changed["path"].endswith("nda.bin") and changed["sha256"]
    assert created["path"].endswith("new.txt")


@pytest.mark.slow
def test_a_sensitive_folder_that_appears_later_is_watched(collector: Collector, tmp_path: Path, world: Path) -> None:
    token, state = _enrolled(collector, tmp_path)
    (world / "home" / "ann" / "Contracts").mkdir(parents=True)
    config = tmp_path / "agent.toml"
    config.write_text(f'[policy]\nsensitive_folders = ["{world}/home/*/Contracts"]\ndestinations = ["{world}/dest"]\n')
    agent = _agent(state, config)
    try:
        _wait(collector, token, lambda e: e["kind"] == "policy.applied", "policy.applied")
        late = world / "home" / "bob" / "Contracts"
        late.mkdir(parents=True)  # a new employee's folder, after the agent started
        _wait(collector, token, lambda e: e["kind"] == "policy.applied"
              and e["attributes"].get("new_sensitive_folder") == str(late), "the new folder to be watched")
        (late / "offer.txt").write_text("salary: confidential")
        subprocess.run(["cat", str(late / "offer.txt")], stdout=subprocess.DEVNULL, check=True)
        read = _wait(collector, token, lambda e: e["kind"] == "file.read" and e["path"] == str(late / "offer.txt"),
                     "the read in the new folder")
        if os.geteuid() == 0:
            assert read["process"] == "cat"
        shutil.copy(late / "offer.txt", world / "dest" / "offer-copy.txt")
        copy = _wait(collector, token, lambda e: e["kind"] == "file.copy" and e["dest_path"].endswith("offer-copy.txt"),
                     "the copy from the new folder")
        assert copy["attributes"]["source_paths"] == [str(late / "offer.txt")]
    finally:
        assert stop(agent) == 0
