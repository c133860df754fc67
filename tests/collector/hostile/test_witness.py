"""A malicious witness against the collector's submitter: an answer dribbled for ever must not hold the tree-head
signing job (it signs, then witnesses) past the configured timeout, and a huge answer is not read whole."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from collector.evidence.witnesses import WitnessEndpoint, WitnessSubmitter
from collector.transparency import load_tree_key, tree_public_key

from tests.collector.evidence.world import CaseWorld, build_case
from tests.collector.hostile.servers import hostile_server
from tests.verify.test_witness import WitnessProcess


@pytest.fixture
def world(tmp_path: Path) -> Iterator[CaseWorld]:
    w = build_case(tmp_path / "collector", batches=2)
    yield w
    w.store.close()


@pytest.mark.parametrize("mode", ["dribble", "huge"])
def test_a_hostile_witness_is_given_up_on_and_nothing_is_kept(world: CaseWorld, mode: str) -> None:
    with hostile_server(mode) as url:
        submitter = WitnessSubmitter(world.store, tree_public_key(load_tree_key(world.data_dir)),
                                     [WitnessEndpoint("evil", url, b"\x01" * 32)], timeout_s=1)
        kept: list[int] = []
        job = threading.Thread(target=lambda: kept.append(submitter.run_once()), daemon=True)
        job.start()
        job.join(30)  # far beyond the 1 s timeout: before the fix a dribbling witness held it for ever
        assert not job.is_alive(), "the witness held the tree-head job past its timeout"
    assert kept == [0]
    with world.store.read() as tx:
        assert tx.cosignatures() == []


def test_a_client_that_never_finishes_its_request_does_not_hold_the_witness(tmp_path: Path) -> None:
    """Someone with no credentials opens a connection to shoumi-witness and sends half a request: the collector's
    submissions are still answered (before the fix the single-threaded server waited on that socket for ever)."""
    folder = tmp_path / "witness"
    folder.mkdir()
    witness = WitnessProcess(folder, b"\x02" * 32).start()
    try:
        host, port = witness.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as idle:
            idle.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhalf")
            answer = httpx.get(witness.url + "/", timeout=5, trust_env=False)
            assert answer.status_code == 200 and answer.json()["name"] == "auditor"
    finally:
        witness.stop()
