"""Real processes for the end-to-end path: the CLI as a new user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    return str(BIN / name)


def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed ({done.returncode}): {done.stderr}")
    return done


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("process did not stop on SIGTERM within 20 s")
    return proc.returncode


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Collector:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.grpc = self.http = self.enroll = self.fingerprint = ""

    def start(self, *extra: str, grpc_listen: str = "127.0.0.1:0") -> "Collector":
        addr = self.data_dir / "collector.addr.json"
        addr.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [tool("shoumi-collector"), "serve", "--data-dir", str(self.data_dir), "--grpc-listen", grpc_listen,
                 "--enroll-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", *extra],
                stdout=log, stderr=subprocess.STDOUT,
            )
        proc = self.proc
        eventually(lambda: addr.exists() or proc.poll() is not None, what="collector start")
        assert proc.poll() is None, self.log.read_text()
        info = json.loads(addr.read_text())
        self.grpc, self.http = info["grpc"], info["http"]
        self.enroll, self.fingerprint = info["enroll"], info["ca_fingerprint"]
        return self

    def enroll_agent(self, state_dir: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Enrolls an agent the way IT does: token, pinned CA fingerprint, enrollment listener."""
        token = self.cli("enroll-token", "create")
        return run(tool("shoumi-agent"), "enroll", "--collector", self.enroll, "--token", token,
                   "--ca-fingerprint", self.fingerprint, "--state-dir", str(state_dir), check=check)

    def cli(self, *args: str, stdin: str | None = None) -> str:
        return run(tool("shoumi-collector"), *args, "--data-dir", str(self.data_dir), stdin=stdin).stdout.strip()

    def get(self, path: str, token: str) -> Any:
        req = urllib.request.Request(self.http + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as reply:
            return json.load(reply)

    def reveal(self, pseudonym: str, token: str) -> str:
        """The real name behind a pseudonym the API showed (a security analyst's token; audited with a reason)."""
        body = json.dumps({"pseudonym": pseudonym, "reason": "e2e: who did this, for the test"}).encode()
        req = urllib.request.Request(self.http + "/api/v1/identities/reveal", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as reply:
            return str(json.load(reply)["user"])

    def events(self, token: str) -> list[dict[str, Any]]:
        items, cursor = [], None
        while True:
            page = self.get(f"/api/v1/events?limit=1000{'&cursor=' + cursor if cursor else ''}", token)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return items

    def stop(self) -> int:
        assert self.proc is not None
        return stop(self.proc)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "collector")
    yield c
    if c.proc is not None and c.proc.poll() is None:
        c.stop()
