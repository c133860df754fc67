"""A malicious witness against the collector's submitter: an answer dribbled for ever must not hold the tree-head
signing job (it signs, then witnesses) past the configured timeout, and a huge answer is not read whole."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

from collector.evidence.witnesses import WitnessEndpoint, WitnessSubmitter
from collector.transparency import load_tree_key, tree_public_key

from tests.collector.evidence.world import CaseWorld, build_case
from tests.collector.hostile.servers import hostile_server


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
