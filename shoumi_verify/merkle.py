"""Checking RFC 9162 inclusion and consistency proofs (SHA-256), for the offline verifier.

Written apart from collector/domain/merkle.py on purpose: the verifier a third party runs must not
import the collector whose output it checks. tests/verify/test_merkle_agrees.py checks that both
agree on proofs the collector makes. Answers False for a bad proof, never raises.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

__all__ = ["inclusion_root", "consistency_ok"]


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def inclusion_root(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    """The root an inclusion proof of leaf hash ``leaf`` at ``index`` in a tree of ``size`` leads to (§2.1.3.2)."""
    if not 0 <= index < size or len(leaf) != 32:
        return None
    fn, sn, value = index, size - 1, leaf
    for sibling in proof:
        if sn == 0 or len(sibling) != 32:
            return None
        if fn % 2 == 1 or fn == sn:
            value = _node(sibling, value)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn // 2, sn // 2
        else:
            value = _node(value, sibling)
        fn, sn = fn // 2, sn // 2
    return value if sn == 0 else None


def consistency_ok(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Tells whether ``proof`` shows the tree (old_size, old_root) is a prefix of (new_size, new_root) (§2.1.4.2)."""
    if old_size < 0 or new_size < old_size:
        return False
    if old_size == new_size:
        return len(proof) == 0 and old_root == new_root
    if old_size == 0:
        return len(proof) == 0
    if not proof or any(len(p) != 32 for p in proof):
        return False
    nodes = list(proof)
    if old_size & (old_size - 1) == 0:
        nodes = [old_root] + nodes
    fn, sn = old_size - 1, new_size - 1
    while fn % 2 == 1:
        fn, sn = fn // 2, sn // 2
    first = second = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            first, second = _node(c, first), _node(c, second)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn // 2, sn // 2
        else:
            second = _node(second, c)
        fn, sn = fn // 2, sn // 2
    return sn == 0 and first == old_root and second == new_root
