"""The Merkle tree of RFC 6962 / RFC 9162 (Certificate Transparency), over SHA-256.

Pure: values in, values out. It never touches a database, a file or the network, so the verifier
and the signer reuse it unchanged and hypothesis can test it exhaustively.

Theory of operation
-------------------
A leaf hash is SHA-256(0x00 || data); an interior node is SHA-256(0x01 || left || right). The
two prefixes keep a leaf from ever being passed off as a node (second-preimage resistance). The
tree hash of n leaves splits at k, the largest power of two smaller than n: MTH(D[n]) =
NODE(MTH(D[0:k]), MTH(D[k:n])); the empty tree hashes to SHA-256 of nothing.

``TreeBuilder`` keeps only the roots of the perfect subtrees (at most log2 n hashes), so a root
over millions of leaves is computed in one pass with constant memory. Inclusion and consistency
proofs follow RFC 6962 §2.1.1-2.1.2 (generation) and RFC 9162 §2.1.3.2 and §2.1.4.2
(verification). Generation works on the full list of leaf hashes; verification needs only the
proof, the sizes and the roots.

Errors: a verifier answers False and never raises for a bad proof; a generator raises
``ValueError`` for an index or size outside the tree.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "TreeBuilder",
    "inclusion_proof",
    "root_from_inclusion_proof",
    "verify_inclusion",
    "consistency_proof",
    "verify_consistency",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Returns SHA-256(0x00 || data), the hash of one leaf."""
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Returns SHA-256(0x01 || left || right), the hash of an interior node."""
    return hashlib.sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class TreeBuilder:
    """Appends leaf hashes and gives the root of the tree so far; O(log n) memory."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (height, hash) of perfect subtrees, left to right
        self.size = 0

    def append(self, leaf: bytes) -> None:
        """Adds the next leaf hash (not the leaf data)."""
        height, value = 0, leaf
        while self._stack and self._stack[-1][0] == height:
            value = node_hash(self._stack.pop()[1], value)
            height += 1
        self._stack.append((height, value))
        self.size += 1

    def root(self) -> bytes:
        """Returns MTH of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        value = self._stack[-1][1]
        for _height, left in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """Returns MTH over a list of leaf hashes."""
    builder = TreeBuilder()
    for leaf in leaves:
        builder.append(leaf)
    return builder.root()


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return leaves[lo]
    k = _split(hi - lo)
    return node_hash(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def _path(m: int, leaves: Sequence[bytes], lo: int, hi: int) -> list[bytes]:
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return _path(m, leaves, lo, lo + k) + [_mth(leaves, lo + k, hi)]
    return _path(m - k, leaves, lo + k, hi) + [_mth(leaves, lo, lo + k)]


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """Returns the audit path (RFC 6962 PATH) of leaf ``index`` in the tree of the first ``size`` leaves."""
    size = len(leaves) if size is None else size
    if not 0 <= index < size <= len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves (of {len(leaves)} known)")
    return _path(index, leaves, 0, size)


def _subproof(m: int, leaves: Sequence[bytes], lo: int, hi: int, complete: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if complete else [_mth(leaves, lo, hi)]
    k = _split(n)
    if m <= k:
        return _subproof(m, leaves, lo, lo + k, complete) + [_mth(leaves, lo + k, hi)]
    return _subproof(m - k, leaves, lo + k, hi, False) + [_mth(leaves, lo, lo + k)]


def consistency_proof(leaves: Sequence[bytes], first: int, second: int | None = None) -> list[bytes]:
    """Returns the proof (RFC 6962 PROOF) that the tree of ``first`` leaves is a prefix of ``second``."""
    second = len(leaves) if second is None else second
    if not 0 <= first <= second <= len(leaves):
        raise ValueError(f"no consistency proof from {first} to {second} leaves (of {len(leaves)} known)")
    if first == 0 or first == second:
        return []
    return _subproof(first, leaves, 0, second, True)


def _shift_while_even(fn: int, sn: int) -> tuple[int, int]:
    while fn and not fn & 1:
        fn >>= 1
        sn >>= 1
    return fn, sn


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    """Returns the root the proof leads to (RFC 9162 §2.1.3.2), or None if it cannot be one."""
    if not 0 <= index < size or len(leaf) != HASH_SIZE:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0 or len(p) != HASH_SIZE:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _shift_while_even(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """Tells whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` with ``root``."""
    return root_from_inclusion_proof(index, size, leaf, proof) == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Tells whether ``proof`` shows the tree (first, first_root) is a prefix of (second, second_root)."""
    if not 0 <= first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the old root is itself a node of the new tree
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _shift_while_even(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root
