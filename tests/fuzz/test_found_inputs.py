"""Inputs the batch fuzzer found, kept as regressions: each must end in a documented refusal.

These run without atheris. ``regressions/`` holds the raw wire bytes; the fuzz test also seeds
its corpus with them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shoumi import batch as chain

from collector.ingest.codec import decode_batch, decode_events

REGRESSIONS = Path(__file__).with_name("regressions")


@pytest.mark.parametrize("name", sorted(p.name for p in REGRESSIONS.iterdir()))
def test_found_input_is_refused_as_malformed(name: str) -> None:
    batch = decode_batch((REGRESSIONS / name).read_bytes())
    chain.check_shape(batch)  # the shape is fine: the trouble is deeper
    with pytest.raises(chain.MalformedBatch):
        decode_events(batch)
