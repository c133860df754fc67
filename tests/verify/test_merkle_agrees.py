"""The verifier's own RFC 9162 proof checks (shoumi_verify/merkle.py, written apart from the collector's)
agree with collector/domain/merkle.py on every proof it makes, and refuse a changed one."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings, strategies as st

from collector.domain import merkle
from shoumi_verify.merkle import consistency_ok, inclusion_root


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(b"\x00" + i.to_bytes(4, "big")).digest() for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 300), data=st.data())
def test_inclusion_agrees(size: int, data: st.DataObject) -> None:
    leaves = _leaves(size)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(leaves, index, size)
    root = merkle.root_hash(leaves)
    assert inclusion_root(index, size, leaves[index], proof) == root
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bent = proof[:at] + [bytes(32)] + proof[at + 1:]
        assert inclusion_root(index, size, leaves[index], bent) != root
        assert inclusion_root(index, size, leaves[index], proof[:-1]) != root


@settings(max_examples=300, deadline=None)
@given(new=st.integers(1, 300), data=st.data())
def test_consistency_agrees(new: int, data: st.DataObject) -> None:
    leaves = _leaves(new)
    old = data.draw(st.integers(0, new))
    proof = merkle.consistency_proof(leaves, old, new)
    old_root, new_root = merkle.root_hash(leaves[:old]), merkle.root_hash(leaves)
    assert consistency_ok(old, new, old_root, new_root, proof)
    assert merkle.verify_consistency(old, new, old_root, new_root, proof)
    if 0 < old < new:
        forked = list(leaves)
        forked[data.draw(st.integers(0, old - 1))] = bytes(32)
        assert not consistency_ok(old, new, merkle.root_hash(forked[:old]), new_root, proof)
        assert not consistency_ok(old, new, old_root, new_root, proof[:-1])
    if old == new and old:
        assert not consistency_ok(old, new, old_root, bytes(32), [])  # the same size, another root: a fork
