"""shoumi-witness as a real process on loopback port 0: it cosigns consistent heads, refuses forks, keeps
its last head across restarts; the collector's submitter keeps the cosignatures and the bundle carries them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from collector.domain.evidence import sign_tree_head
from collector.domain.merkle import consistency_proof
from collector.evidence.bundle import WitnessKey
from collector.evidence.witnesses import WitnessEndpoint, WitnessSubmitter
from collector.transparency import load_tree_key, tree_public_key
from shoumi_verify.check import Trust, verify_bundle
from shoumi_verify.formats import add_checkpoint_request, checkpoint_note, origin_of

from tests.collector.evidence.world import CaseWorld, build_case, export
from tests.verify.tamper import edit_json, failure, reseal, zip_bytes

BIN = Path(sys.executable).parent


class WitnessProcess:
    def __init__(self, folder: Path, log_key: bytes, name: str = "auditor") -> None:
        self.folder, self.log_key, self.name = folder, log_key, name
        self.key = folder / "witness.key"
        self.state = folder / "witness-state.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        done = subprocess.run([str(BIN / "shoumi-witness"), "init", "--key", str(self.key)], capture_output=True,
                              text=True, timeout=30, check=True)
        self.public_key = bytes.fromhex(done.stdout.strip())

    def start(self) -> "WitnessProcess":
        ready = self.folder / "ready.json"
        ready.unlink(missing_ok=True)
        with open(self.folder / "witness.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "shoumi-witness"), "serve", "--key", str(self.key), "--state", str(self.state),
                 "--log-key", self.log_key.hex(), "--name", self.name, "--listen", "127.0.0.1:0",
                 "--ready-file", str(ready)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert self.proc.poll() is None, (self.folder / "witness.log").read_text()
            assert time.monotonic() < deadline, "the witness did not start"
            time.sleep(0.05)
        self.url = json.loads(ready.read_text())["url"]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)

    def log(self) -> str:
        return (self.folder / "witness.log").read_text()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[CaseWorld]:
    w = build_case(tmp_path / "collector", batches=3)
    yield w
    w.store.close()


@pytest.fixture
def witness(world: CaseWorld, tmp_path: Path) -> Iterator[WitnessProcess]:
    folder = tmp_path / "witness"
    folder.mkdir()
    w = WitnessProcess(folder, tree_public_key(load_tree_key(world.data_dir))).start()
    yield w
    w.stop()


def _submitter(world: CaseWorld, witness: WitnessProcess) -> WitnessSubmitter:
    return WitnessSubmitter(world.store, witness.log_key, [WitnessEndpoint(witness.name, witness.url, witness.public_key)])


def test_the_witness_cosigns_and_the_bundle_carries_and_checks_it(world: CaseWorld, witness: WitnessProcess,
                                                                   tmp_path: Path) -> None:
    assert _submitter(world, witness).run_once() == 1
    with world.store.read() as tx:
        latest = tx.latest_tree_head()
        kept = tx.cosignatures()
    assert latest is not None and [(c.witness, c.tree_size) for c in kept] == [("auditor", latest.tree_size)]
    assert _submitter(world, witness).run_once() == 0  # nothing new to cosign
    made = export(world, witnesses=(WitnessKey(witness.name, witness.public_key),))
    report = verify_bundle(made.members, Trust(witness_keys=(witness.public_key,)), lang="en")
    assert any(code == "ok.witnesses" and "--witness-key" in d["trusted"] for code, d in report.passed)
    # the console script with the witness key from a file, as an auditor holds it
    key_file = tmp_path / "auditor.pub"
    key_file.write_text(witness.public_key.hex() + "\n")
    path = tmp_path / "bundle.zip"
    path.write_bytes(made.zip)
    done = subprocess.run([str(BIN / "shoumi-verify"), str(path), "--witness-key", str(key_file)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "见证者副署验证通过" in done.stdout, done.stdout
    # dropping the cosignature: the manifest says so; re-sealed by the operator, the auditor's key still does
    dropped = edit_json(made.members, "witness/cosignatures.json", lambda d: [])
    assert (failure(dropped) or pytest.fail("passed")).code == "member.hash"
    resealed = reseal(dropped, load_tree_key(world.data_dir))
    assert failure(resealed) is None  # without a key from elsewhere, nothing tells
    found = failure(resealed, Trust(witness_keys=(witness.public_key,)))
    assert found is not None and found.code == "witness.required"
    path.write_bytes(zip_bytes(resealed))
    done = subprocess.run([str(BIN / "shoumi-verify"), str(path), "--witness-key", str(key_file), "--lang", "en"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "[witness.required]" in done.stdout
    # a cosignature changed and re-sealed: the witness's key from the bundle no longer verifies it
    bent = reseal(edit_json(made.members, "witness/cosignatures.json", lambda d: d[0].update(timestamp=1)),
                  load_tree_key(world.data_dir))
    assert (failure(bent) or pytest.fail("passed")).code == "witness.signature"


def _post(witness: WitnessProcess, old: int, proof: list[bytes], size: int, root: bytes, world: CaseWorld) -> httpx.Response:
    key = load_tree_key(world.data_dir)
    head = sign_tree_head(key, tree_size=size, root_hash=root, timestamp_ns=time.time_ns())
    note = checkpoint_note(origin_of(witness.log_key), size, root, head.timestamp_ns, head.key_id, head.signature)
    return httpx.post(witness.url + "/add-checkpoint", content=add_checkpoint_request(old, proof, note), timeout=10)


def test_the_witness_refuses_a_fork_and_keeps_its_head(world: CaseWorld, witness: WitnessProcess) -> None:
    assert _submitter(world, witness).run_once() == 1
    state = witness.state.read_text()
    with world.store.read() as tx:
        latest = tx.latest_tree_head()
        leaves = [x.leaf_hash for x in tx.list_tree_leaves(start=0, limit=1000)]
    assert latest is not None
    # the same size with another root, signed with the collector's own key: a fork
    same_size = _post(witness, latest.tree_size, [], latest.tree_size, b"\x09" * 32, world)
    assert same_size.status_code == 422 and "fork" in same_size.text
    # a larger tree that rewrote an old leaf: its proof from the witnessed head cannot check
    rewritten = list(leaves) + [b"\x05" * 32]
    rewritten[0] = b"\x06" * 32
    from collector.domain.merkle import root_hash
    bigger = _post(witness, latest.tree_size, consistency_proof(rewritten, latest.tree_size), len(rewritten),
                   root_hash(rewritten), world)
    assert bigger.status_code == 422
    assert witness.state.read_text() == state  # nothing of the fork was kept
    assert "REFUSED a fork" in witness.log()
    # a stale old size: 409 with the witness's size; wrong log or key: 404 / 403; junk: 400
    stale = _post(witness, 0, [], latest.tree_size, latest.root_hash, world)
    assert stale.status_code == 409 and stale.text.strip() == str(latest.tree_size)
    assert stale.headers["content-type"] == "text/x.tlog.size"
    junk = httpx.post(witness.url + "/add-checkpoint", content=b"hello", timeout=10)
    assert junk.status_code == 400
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    other = Ed25519PrivateKey.generate()
    head = sign_tree_head(other, tree_size=latest.tree_size + 1, root_hash=b"\x01" * 32, timestamp_ns=1)
    forged = checkpoint_note(origin_of(witness.log_key), head.tree_size, head.root_hash, 1, head.key_id, head.signature)
    reply = httpx.post(witness.url + "/add-checkpoint", content=add_checkpoint_request(latest.tree_size, [], forged),
                       timeout=10)
    assert reply.status_code == 403
    # a restart keeps the head: the fork is still refused, the real history still accepted
    witness.stop()
    witness.start()
    assert _post(witness, latest.tree_size, [], latest.tree_size, b"\x09" * 32, world).status_code == 422
    assert json.loads(httpx.get(witness.url + "/", timeout=10).text)["tree_size"] == latest.tree_size


def test_a_witness_ahead_of_the_collectors_record_is_proved_from_its_own_size(world: CaseWorld,
                                                                             witness: WitnessProcess) -> None:
    assert _submitter(world, witness).run_once() == 1
    with world.store.transaction() as tx:  # the collector lost its record of that cosignature
        tx._conn.exec_driver_sql("DELETE FROM witness_cosignatures")  # type: ignore[attr-defined]
    assert _submitter(world, witness).run_once() == 1  # the witness answers 409 with its size; proved from there
    with world.store.read() as tx:
        assert [c.witness for c in tx.cosignatures()] == ["auditor"]
    assert "proving from there" not in witness.log()  # that line is the collector's, not the witness's


def test_a_witness_that_is_down_is_tried_again(world: CaseWorld, tmp_path: Path) -> None:
    down = WitnessSubmitter(world.store, tree_public_key(load_tree_key(world.data_dir)),
                            [WitnessEndpoint("gone", "http://127.0.0.1:9", b"\x01" * 32)], timeout_s=1)
    assert down.run_once() == 0  # logged, nothing kept, nothing raised
    assert os.path.exists(world.data_dir)
