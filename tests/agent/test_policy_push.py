"""Pushed policies end to end on the agent side: the real `shoumi-agent` CLI (enroll, run) against a
small collector written for the test (gRPC on loopback port 0: enrollment that hands out a policy key,
ingest that acks every batch and attaches the policy it is told to push to every Ack)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from shoumi.signed_policy import document_sha256, sign_policy
from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

AGENT = str(Path(sys.executable).parent / "shoumi-agent")
HEARTBEAT_S = 1.0


class _Collector(ingest_pb2_grpc.IngestServiceServicer, ingest_pb2_grpc.EnrollmentServiceServicer):
    """Enrolls agents with a policy key, stores their events, and pushes ``self.push`` on every Ack."""

    def __init__(self, *, give_key: bool = True) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.give_key = give_key
        self.push: events_pb2.SignedPolicy | None = None
        self.lock = threading.RLock()  # checks given to wait() may count events themselves
        self.seen: set[tuple[int, int]] = set()
        self.events: list[dict[str, Any]] = []

    def Enroll(self, request: ingest_pb2.EnrollRequest, context: object) -> ingest_pb2.EnrollResponse:
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return ingest_pb2.EnrollResponse(agent_id="agt-push", policy_public_key=raw if self.give_key else b"")

    def StreamEvents(self, request_iterator: Iterator[events_pb2.EventBatch], context: object
                     ) -> Iterator[events_pb2.Ack]:
        for batch in request_iterator:
            with self.lock:
                for event in batch.events:
                    if (batch.epoch, event.seq) in self.seen:
                        continue  # redelivered after a reconnect
                    self.seen.add((batch.epoch, event.seq))
                    self.events.append({"kind": event.kind, "path": event.path, "seq": event.seq,
                                        "attributes": json_format.MessageToDict(event.attributes)})
                push = self.push
            ack = events_pb2.Ack(agent_id=batch.agent_id, epoch=batch.epoch,
                                 acked_seq=batch.first_seq + len(batch.events) - 1)
            if push is not None:
                ack.policy.CopyFrom(push)
            yield ack

    def sign(self, name: str, version: int, document: str) -> events_pb2.SignedPolicy:
        return sign_policy(name=name, version=version, issued_unix_ns=time.time_ns(),
                           document=document.encode(), key=self.key)

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["kind"] == kind]

    def wait(self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for event in self.events:
                    if check(event):
                        return event
            time.sleep(0.05)
        with self.lock:
            kinds = [(e["kind"], e["path"]) for e in self.events[-30:]]
        raise AssertionError(f"timed out waiting for {what}; last events: {kinds}")

    def heartbeats(self) -> int:
        return len(self.kinds("agent.heartbeat"))

    def wait_heartbeats(self, n: int) -> None:
        """Waits for n more heartbeats: everything the agent recorded before them has arrived."""
        target = self.heartbeats() + n
        self.wait(f"{n} heartbeats", lambda e: self.heartbeats() >= target)


@pytest.fixture
def server() -> Iterator[tuple[_Collector, str]]:
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(collector, server)
    ingest_pb2_grpc.add_EnrollmentServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collector, f"127.0.0.1:{port}"
    server.stop(grace=None)


def _enroll(address: str, state: Path) -> None:
    done = subprocess.run([AGENT, "enroll", "--collector", address, "--token", "t", "--insecure-dev",
                           "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


class _Agent:
    def __init__(self, state: Path, *args: str) -> None:
        self.log = state.parent / f"{state.name}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [AGENT, "run", "--state-dir", str(state), "--heartbeat-seconds", str(HEARTBEAT_S), *args],
                stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("the agent did not stop on SIGTERM")


def _doc(*folders: Path | str, extra: str = "") -> str:
    return "[policy]\nsensitive_folders = " + json.dumps([str(f) for f in folders]) + "\n" + extra


def _applied(c: _Collector, name: str, version: int) -> dict[str, Any]:
    return c.wait(f"policy.applied {name} v{version}", lambda e: e["kind"] == "policy.applied"
                  and e["attributes"].get("name") == name and e["attributes"].get("version") == version)


def _refused(c: _Collector, version: int) -> dict[str, Any]:
    return c.wait(f"policy.refused v{version}", lambda e: e["kind"] == "policy.refused"
                  and e["attributes"].get("version") == version)


def _recorded(c: _Collector, path: Path) -> list[dict[str, Any]]:
    with c.lock:
        return [e for e in c.events if e["path"] == str(path) and e["kind"].startswith("file.")]


@pytest.mark.parametrize("capture", ["inotify", "fanotify"])
def test_a_pushed_policy_is_applied_followed_kept_and_bad_ones_refused(
        server: tuple[_Collector, str], tmp_path: Path, capture: str) -> None:
    collector, address = server
    old, new, dest = tmp_path / "old", tmp_path / "new", tmp_path / "dest"
    for folder in (old, new, dest):
        folder.mkdir()
    (new / "existing.txt").write_text("already there, " * 200)
    (old / "was-sensitive.txt").write_text("sensitive before the push, " * 200)
    state = tmp_path / "state"
    _enroll(address, state)
    assert (state / "policy_key.pub").stat().st_mode & 0o077 == 0
    agent = _Agent(state, "--watch", str(old), "--capture", capture)
    try:
        local = _applied(collector, "local", 0)
        assert local["attributes"]["source"] == "local" and len(local["attributes"]["sha256"]) == 64
        collector.wait_heartbeats(1)

        # pushed: applied before the second heartbeat after it (the first Ack that carries it)
        before = collector.heartbeats()
        document = _doc(new, extra=f'destinations = ["{tmp_path / "dest"}"]\n')
        collector.push = collector.sign("finance", 3, document)
        applied = _applied(collector, "finance", 3)
        assert collector.heartbeats() <= before + 2
        assert applied["attributes"]["source"] == "collector"
        assert applied["attributes"]["sha256"] == document_sha256(document.encode())
        assert applied["attributes"]["policy"]["sensitive_folders"] == [str(new)]
        beat = collector.wait("a heartbeat naming the policy",
                              lambda e: e["kind"] == "agent.heartbeat" and e["attributes"].get("policy_version") == 3)
        assert beat["attributes"]["policy_name"] == "finance"
        assert beat["attributes"]["policy_sha256"] == applied["attributes"]["sha256"]

        # the next events follow it: the new folder is recorded, the old one is not
        (old / "after.txt").write_text("no longer watched")
        (new / "after.txt").write_text("now sensitive")
        collector.wait("the write in the new folder", lambda e: e["path"] == str(new / "after.txt"))
        # a copy into the new destination is found (the new folder's files were indexed at the swap);
        # a copy of an old folder's file is none of the new policy's business
        (dest / "copy.txt").write_bytes((new / "existing.txt").read_bytes())
        (dest / "old-copy.txt").write_bytes((old / "was-sensitive.txt").read_bytes())
        copy = collector.wait("the copy into the new destination", lambda e: e["kind"] == "file.copy")
        assert copy["path"] == str(new / "existing.txt")
        collector.wait_heartbeats(2)
        assert _recorded(collector, old / "after.txt") == []
        assert [e["path"] for e in collector.kinds("file.copy")] == [str(new / "existing.txt")]
        # the old folder's files were forgotten quietly, not reported deleted
        assert not [e for e in collector.kinds("file.delete") if e["path"].startswith(str(old))]

        # pushed again on every Ack: applied once
        collector.wait_heartbeats(2)
        assert len([e for e in collector.kinds("policy.applied") if e["attributes"].get("version") == 3]) == 1

        # a bad glob: refused with the reason, the previous policy stays
        collector.push = collector.sign("finance", 4, _doc("/*"))
        refused = _refused(collector, 4)
        assert "too broad" in refused["attributes"]["reason"] and refused["attributes"]["name"] == "finance"
        # a broken signature
        tampered = collector.sign("finance", 5, _doc(old))
        tampered.document = _doc(tmp_path).encode()
        collector.push = tampered
        assert "signature" in _refused(collector, 5)["attributes"]["reason"]
        # an older version of the same policy
        collector.push = collector.sign("finance", 2, _doc(old))
        assert "older than the applied version" in _refused(collector, 2)["attributes"]["reason"]
        collector.wait_heartbeats(2)
        assert len(collector.kinds("policy.refused")) == 3  # each once, though pushed on every Ack
        last = collector.kinds("agent.heartbeat")[-1]["attributes"]
        assert (last["policy_name"], last["policy_version"]) == ("finance", 3)
        (new / "still.txt").write_text("still sensitive")
        collector.wait("the write in the folder of the policy in force", lambda e: e["path"] == str(new / "still.txt"))
    finally:
        agent.stop()

    # a restart keeps the last good pushed policy, over --watch
    collector.push = None
    agent = _Agent(state, "--watch", str(old), "--capture", capture)
    try:
        start = collector.wait("the second agent.start", lambda e: e["kind"] == "agent.start"
                               and e["attributes"].get("policy_name") == "finance")
        assert start["attributes"]["policy_version"] == 3
        assert len(collector.kinds("agent.start")) == 2
        (new / "restarted.txt").write_text("x")
        collector.wait("the write after restart", lambda e: e["path"] == str(new / "restarted.txt"))
    finally:
        agent.stop()


def test_a_tampered_stored_policy_is_refused_at_start_and_the_local_one_used(
        server: tuple[_Collector, str], tmp_path: Path) -> None:
    collector, address = server
    watched, other = tmp_path / "watched", tmp_path / "other"
    watched.mkdir()
    other.mkdir()
    state = tmp_path / "state"
    _enroll(address, state)
    stored = collector.sign("finance", 1, _doc(other))
    from agent.policy_push import PushedPolicyStore

    stored.document = _doc(tmp_path / "elsewhere").encode()  # edited on disk after it was signed
    PushedPolicyStore(state).save(stored)
    agent = _Agent(state, "--watch", str(watched), "--capture", "inotify")
    try:
        refused = _refused(collector, 1)
        assert "stored policy" in refused["attributes"]["reason"]
        assert "signature" in refused["attributes"]["reason"]
        _applied(collector, "local", 0)
    finally:
        agent.stop()


def test_an_agent_without_a_pinned_key_refuses_pushed_policies(tmp_path: Path) -> None:
    collector = _Collector(give_key=False)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(collector, server)
    ingest_pb2_grpc.add_EnrollmentServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    watched = tmp_path / "watched"
    watched.mkdir()
    state = tmp_path / "state"
    try:
        _enroll(f"127.0.0.1:{port}", state)
        assert not (state / "policy_key.pub").exists()
        agent = _Agent(state, "--watch", str(watched), "--capture", "inotify")
        try:
            _applied(collector, "local", 0)
            collector.push = collector.sign("finance", 1, _doc(tmp_path))
            assert "no collector policy key is pinned" in _refused(collector, 1)["attributes"]["reason"]
        finally:
            agent.stop()
    finally:
        server.stop(grace=None)


def test_an_agent_with_a_key_and_no_local_policy_waits_for_the_collectors(
        server: tuple[_Collector, str], tmp_path: Path) -> None:
    collector, address = server
    folder = tmp_path / "contracts"
    folder.mkdir()
    state = tmp_path / "state"
    _enroll(address, state)
    collector.push = collector.sign("legal", 1, _doc(folder))
    agent = _Agent(state, "--capture", "inotify")
    try:
        _applied(collector, "legal", 1)
        (folder / "nda.txt").write_text("x")
        collector.wait("the write in the pushed folder", lambda e: e["path"] == str(folder / "nda.txt"))
    finally:
        agent.stop()
