"""Values of the collector's tamper evidence: tree leaves, signed tree heads and raw stored rows.

Pure: no SQL, no files. ``collector.transparency`` signs heads with a key it keeps on disk and
``collector.verify`` re-checks everything; both build on the definitions here, so what is signed
and what is checked cannot drift apart.

Theory of operation
-------------------
Leaf i of the tree is the i-th stored batch the collector covered, and its data is the batch's
canonical bytes followed by its 64-byte agent signature (``batch_leaf_data``): exactly what the
agent signed plus the signature, so a leaf pins the batch's content *and* the agent's proof of it.
``TreeLeaf`` records which batch row became which leaf; the signed heads authenticate that record.

A tree head is signed with the collector's Ed25519 key over ``TREE_HEAD_DOMAIN`` followed by
tree_size (8 bytes, big endian), timestamp_ns (8 bytes, big endian) and root_hash (32 bytes).
The domain string keeps a head signature from being valid as any other message of the system.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from collector.domain.merkle import HASH_SIZE, leaf_hash
from collector.events.models import StoredBatch

__all__ = [
    "TREE_HEAD_DOMAIN",
    "TreeLeaf",
    "SignedTreeHead",
    "BatchRow",
    "EventRow",
    "batch_leaf_data",
    "batch_leaf_hash",
    "tree_head_bytes",
    "key_id",
    "sign_tree_head",
    "tree_head_signature_ok",
]

TREE_HEAD_DOMAIN = b"shoumi.v1.TreeHead\n"


@dataclass(frozen=True)
class TreeLeaf:
    """Leaf ``leaf_index`` of the tree is the batch stored in row ``batch_row_id``.

    Not validated here: leaves are read back from a store that may have been changed, and the
    verifier must report such a leaf rather than fail to read it.
    """

    leaf_index: int
    batch_row_id: int
    leaf_hash: bytes


@dataclass(frozen=True)
class SignedTreeHead:
    """The collector's signed statement: the first ``tree_size`` leaves have root ``root_hash``."""

    tree_size: int
    root_hash: bytes
    timestamp_ns: int
    key_id: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        """Returns the bytes the signature is over."""
        return tree_head_bytes(self.tree_size, self.root_hash, self.timestamp_ns)


@dataclass(frozen=True)
class BatchRow:
    """A stored batch and the row it is stored in (its place in the collector's ingest order).

    ``pruned_at_ns`` is set when retention deleted the batch's events and blanked its canonical
    bytes (the hashes, signature and Merkle leaf are kept); None for a batch kept whole.
    """

    row_id: int
    batch: StoredBatch
    pruned_at_ns: int | None = None


@dataclass(frozen=True)
class EventRow:
    """An events row exactly as stored, for re-verification; ``attributes`` is the stored JSON text."""

    row_id: int
    agent_id: Any
    epoch: Any
    seq: Any
    event_id: Any
    kind: Any
    time_ns: Any
    path: Any
    dest_path: Any
    size: Any
    sha256: Any
    user_name: Any
    uid: Any
    pid: Any
    process: Any
    exe: Any
    attributes: Any


def batch_leaf_data(canonical: bytes, signature: bytes) -> bytes:
    """Returns a batch's leaf data: its canonical bytes, then its (fixed 64-byte) signature."""
    return canonical + signature


def batch_leaf_hash(canonical: bytes, signature: bytes) -> bytes:
    """Returns the Merkle leaf hash of a stored batch."""
    return leaf_hash(batch_leaf_data(canonical, signature))


def tree_head_bytes(tree_size: int, root_hash: bytes, timestamp_ns: int) -> bytes:
    """Returns the canonical, domain-separated encoding of a tree head that is signed."""
    if tree_size < 0 or timestamp_ns < 0 or len(root_hash) != HASH_SIZE:
        raise ValueError("a tree head has a size >= 0, a time >= 0 and a 32-byte root")
    return TREE_HEAD_DOMAIN + struct.pack(">QQ", tree_size, timestamp_ns) + root_hash


def key_id(public_key: bytes) -> bytes:
    """Returns the SHA-256 of a raw Ed25519 public key, which names the key in a head."""
    return hashlib.sha256(public_key).digest()


def sign_tree_head(key: Ed25519PrivateKey, *, tree_size: int, root_hash: bytes, timestamp_ns: int) -> SignedTreeHead:
    """Signs a tree head with the collector's key."""
    signature = key.sign(tree_head_bytes(tree_size, root_hash, timestamp_ns))
    return SignedTreeHead(tree_size, root_hash, timestamp_ns, key_id(key.public_key().public_bytes_raw()), signature)


def tree_head_signature_ok(head: SignedTreeHead, public_key: bytes) -> bool:
    """Tells whether the head's signature verifies under the raw Ed25519 public key."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(head.signature, head.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return head.key_id == key_id(public_key)
