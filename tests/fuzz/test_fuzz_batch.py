"""Runs the atheris batch harness for a bounded time from a seed corpus of valid signed batches."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import ChainWriter

if importlib.util.find_spec("atheris") is None:
    pytest.skip("atheris is not installed (a machine facility)", allow_module_level=True)

HARNESS = Path(__file__).with_name("fuzz_batch.py")
REGRESSIONS = Path(__file__).with_name("regressions")
KEY_SEED = bytes(range(32))  # the harness's fixed key: seeds pass its signature check


def _seed_corpus(corpus: Path) -> None:
    writer = ChainWriter("agt-fuzz", Ed25519PrivateKey.from_private_bytes(KEY_SEED))
    corpus.mkdir()
    for i, n in enumerate((1, 2, 5)):
        (corpus / f"chain-{i}").write_bytes(writer.next(n).SerializeToString())
    copy = writer.next(1)
    copy.events[0].kind = "file.copy"
    copy.events[0].dest_path = "/media/stick/q3.xlsx"
    copy.events[0].attributes.update({"source_paths": ["/srv/finance/q3.xlsx"], "match_share": 0.625})
    (corpus / "copy").write_bytes(copy.SerializeToString())
    for found in REGRESSIONS.iterdir():  # what earlier runs found stays in every run
        (corpus / found.name).write_bytes(found.read_bytes())


@pytest.mark.slow
def test_batch_decode_and_verify_survives_fuzzing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _seed_corpus(corpus)
    run = subprocess.run(
        [sys.executable, str(HARNESS), str(corpus), "-max_total_time=20", "-rss_limit_mb=2048", "-timeout=10"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Done" in run.stderr and "INITED" in run.stderr
