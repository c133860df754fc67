"""The RFC 6962 Merkle tree: the published test vectors, a naive reference, and hypothesis properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.domain.merkle import (
    EMPTY_ROOT,
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# The reference leaves, roots and proofs used by Certificate Transparency's implementations
# (transparency-dev/merkle testonly/constants.go and proof/verify_test.go, from Trillian).
LEAF_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f",
)]
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
# (leaf index, tree size, proof): the vectors count leaves from 1, we from 0.
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
LEAVES = [leaf_hash(d) for d in LEAF_INPUTS]


def naive_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1's definition, written as literally as possible."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_root(leaves[:k]) + naive_root(leaves[k:])).digest()


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_roots_match_the_published_vectors() -> None:
    assert EMPTY_ROOT == ROOTS[0]
    for size in range(len(LEAVES) + 1):
        assert root_hash(LEAVES[:size]) == ROOTS[size], size
        assert naive_root(LEAVES[:size]) == ROOTS[size], size


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_published_vectors(index: int, size: int, proof: list[str]) -> None:
    expected = [bytes.fromhex(h) for h in proof]
    assert inclusion_proof(LEAVES, index, size) == expected
    assert verify_inclusion(index, size, LEAVES[index], expected, ROOTS[size])
    for wrong_index in (index - 1, index + 1, index ^ 2):
        assert not verify_inclusion(wrong_index, size, LEAVES[index], expected, ROOTS[size])
    assert not verify_inclusion(index, size * 2, LEAVES[index], expected, ROOTS[size])
    assert not verify_inclusion(index, size, leaf_hash(b"WrongLeaf"), expected, ROOTS[size])
    assert not verify_inclusion(index, size, LEAVES[index], expected + [ROOTS[size]], ROOTS[size])
    assert not verify_inclusion(index, size, LEAVES[index], [ROOTS[size]] + expected, ROOTS[size])


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_published_vectors(first: int, second: int, proof: list[str]) -> None:
    expected = [bytes.fromhex(h) for h in proof]
    assert consistency_proof(LEAVES, first, second) == expected
    assert verify_consistency(first, second, ROOTS[first], ROOTS[second], expected)
    if expected:
        assert not verify_consistency(first, second, ROOTS[second], ROOTS[first], expected)
        assert not verify_consistency(first, second, ROOTS[first], ROOTS[second], [])
        assert not verify_consistency(first, second, ROOTS[first], ROOTS[second], expected[:-1])
        assert not verify_consistency(first, second, ROOTS[first], ROOTS[second], expected + [ROOTS[first]])
        assert not verify_consistency(first + 1, second, ROOTS[first], ROOTS[second], expected)
        assert not verify_consistency(first, second * 2, ROOTS[first], ROOTS[second], expected)


def test_degenerate_consistency() -> None:
    assert verify_consistency(0, 0, ROOTS[0], ROOTS[0], [])
    assert verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [ROOTS[0]])
    assert not verify_consistency(4, 4, ROOTS[4], ROOTS[5], [])
    assert not verify_consistency(5, 4, ROOTS[5], ROOTS[4], [])


def test_generators_refuse_positions_outside_the_tree() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(LEAVES, 8, 8)
    with pytest.raises(ValueError):
        inclusion_proof(LEAVES, 0, 9)
    with pytest.raises(ValueError):
        consistency_proof(LEAVES, 5, 3)
    assert root_from_inclusion_proof(3, 3, LEAVES[0], []) is None


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=70))
def test_builder_agrees_with_the_naive_definition(n: int) -> None:
    leaves = _leaves(n)
    builder = TreeBuilder()
    assert builder.root() == EMPTY_ROOT
    for i, leaf in enumerate(leaves):
        builder.append(leaf)
        assert builder.size == i + 1
        assert builder.root() == naive_root(leaves[: i + 1])


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.data())
def test_every_inclusion_proof_verifies_and_a_change_fails(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    root = naive_root(leaves)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = inclusion_proof(leaves, index)
    assert verify_inclusion(index, n, leaves[index], proof, root)
    assert not verify_inclusion(index, n, leaf_hash(b"changed"), proof, root)
    if proof:
        at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bit = data.draw(st.integers(min_value=0, max_value=255))
        damaged = list(proof)
        damaged[at] = bytes([damaged[at][0] ^ (1 << (bit % 8))]) + damaged[at][1:]
        assert not verify_inclusion(index, n, leaves[index], damaged, root)
        assert not verify_inclusion(index, n, leaves[index], proof[:-1], root)
    if n > 1:
        other = (index + 1) % n
        assert not verify_inclusion(other, n, leaves[index], proof, root) or leaves[other] == leaves[index]


def test_every_inclusion_proof_in_every_small_tree_verifies() -> None:
    leaves = _leaves(33)
    for n in range(1, 34):
        root = naive_root(leaves[:n])
        for index in range(n):
            assert verify_inclusion(index, n, leaves[index], inclusion_proof(leaves, index, n), root)


def test_every_consistency_proof_in_every_small_tree_verifies() -> None:
    leaves = _leaves(33)
    roots = [naive_root(leaves[:n]) for n in range(34)]
    for second in range(34):
        for first in range(second + 1):
            proof = consistency_proof(leaves, first, second)
            assert verify_consistency(first, second, roots[first], roots[second], proof), (first, second)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=2, max_value=70), st.data())
def test_consistency_proofs_verify_and_a_changed_history_fails(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    m = data.draw(st.integers(min_value=1, max_value=n - 1))
    proof = consistency_proof(leaves, m, n)
    old_root, new_root = naive_root(leaves[:m]), naive_root(leaves)
    assert verify_consistency(m, n, old_root, new_root, proof)
    # A log that rewrote one of the first m leaves cannot prove consistency with the old head.
    at = data.draw(st.integers(min_value=0, max_value=m - 1))
    rewritten = list(leaves)
    rewritten[at] = leaf_hash(b"rewritten")
    assert not verify_consistency(m, n, old_root, naive_root(rewritten), consistency_proof(rewritten, m, n))
    damaged = list(proof)
    damaged[-1] = node_hash(damaged[-1], damaged[-1])
    assert not verify_consistency(m, n, old_root, new_root, damaged)
