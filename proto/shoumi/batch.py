"""The canonical bytes of an event batch, its Ed25519 signature and the per-agent hash chain.

This is the one hand-written module the agent and the collector share: both must agree on it to
the bit. It never does I/O and knows nothing of gRPC, files or databases.

Theory of operation
-------------------
canonical bytes = DOMAIN + the batch serialized deterministically with its signature cleared.
The agent signs those bytes; the batch's hash is SHA-256 over them; the next batch names that hash
in ``prev_batch_hash``. The first batch of an epoch names ``GENESIS_HASH``. So a changed byte breaks
the signature, and a removed, inserted or reordered batch breaks the chain.

Errors::

    BatchError
     ├── MalformedBatch      (shape: sequence numbers, sizes, missing fields)
     ├── BadSignature        (the signature does not verify under the agent's key)
     └── ChainBroken         (prev_batch_hash / first_seq do not continue the chain)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shoumi.v1 import events_pb2

__all__ = [
    "DOMAIN",
    "GENESIS_HASH",
    "MAX_EVENTS_PER_BATCH",
    "BatchError",
    "MalformedBatch",
    "BadSignature",
    "ChainBroken",
    "ChainHead",
    "canonical_bytes",
    "batch_hash",
    "sign_batch",
    "verify_signature",
    "check_shape",
    "check_continues",
    "check_link",
]

DOMAIN = b"shoumi.v1.EventBatch\n"
GENESIS_HASH = bytes(32)
MAX_EVENTS_PER_BATCH = 1000


class BatchError(Exception):
    """A batch that must not be stored. ``reason`` is a short stable code for logs and alerts."""

    reason = "batch_error"


class MalformedBatch(BatchError):
    reason = "malformed"


class BadSignature(BatchError):
    reason = "bad_signature"


class ChainBroken(BatchError):
    reason = "chain_broken"


@dataclass(frozen=True)
class ChainHead:
    """Where an agent's chain stands: the last stored seq and batch hash of an epoch."""

    epoch: int
    last_seq: int
    last_hash: bytes


def canonical_bytes(batch: events_pb2.EventBatch) -> bytes:
    """Returns the bytes that are signed and hashed: everything in the batch but its signature."""
    unsigned = events_pb2.EventBatch()
    unsigned.CopyFrom(batch)
    unsigned.ClearField("signature")
    return DOMAIN + unsigned.SerializeToString(deterministic=True)


def batch_hash(batch: events_pb2.EventBatch) -> bytes:
    """Returns the SHA-256 of the batch's canonical bytes, the link the next batch names."""
    return hashlib.sha256(canonical_bytes(batch)).digest()


def sign_batch(batch: events_pb2.EventBatch, key: Ed25519PrivateKey) -> bytes:
    """Signs the batch in place and returns its hash."""
    batch.ClearField("signature")
    data = canonical_bytes(batch)
    batch.signature = key.sign(data)
    return hashlib.sha256(data).digest()


def verify_signature(batch: events_pb2.EventBatch, public_key: bytes) -> bytes:
    """Verifies the batch's signature under a raw Ed25519 public key; returns the batch hash."""
    data = canonical_bytes(batch)
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(batch.signature, data)
    except (InvalidSignature, ValueError) as exc:
        raise BadSignature("signature does not verify under the agent's enrolled key") from exc
    return hashlib.sha256(data).digest()


def check_shape(batch: events_pb2.EventBatch, *, max_events: int = MAX_EVENTS_PER_BATCH) -> None:
    """Checks what needs no key and no history: ids, counts and contiguous sequence numbers."""
    if not batch.agent_id:
        raise MalformedBatch("agent_id is empty")
    if batch.epoch < 1:
        raise MalformedBatch("epoch must be >= 1")
    if batch.first_seq < 1:
        raise MalformedBatch("first_seq must be >= 1")
    if not batch.events:
        raise MalformedBatch("batch has no events")
    if len(batch.events) > max_events:
        raise MalformedBatch(f"batch has {len(batch.events)} events, more than {max_events}")
    if len(batch.prev_batch_hash) != 32:
        raise MalformedBatch("prev_batch_hash must be 32 bytes")
    if len(batch.signature) != 64:
        raise MalformedBatch("signature must be 64 bytes")
    for offset, event in enumerate(batch.events):
        if event.seq != batch.first_seq + offset:
            raise MalformedBatch(
                f"event {offset} has seq {event.seq}, expected {batch.first_seq + offset}"
            )


def check_continues(batch: events_pb2.EventBatch, head: ChainHead | None) -> None:
    """Checks that the batch extends the chain whose head is given (None: nothing stored yet)."""
    check_link(epoch=batch.epoch, first_seq=batch.first_seq, prev_hash=bytes(batch.prev_batch_hash), head=head)


def check_link(*, epoch: int, first_seq: int, prev_hash: bytes, head: ChainHead | None) -> None:
    """Checks that a batch at (epoch, first_seq) naming ``prev_hash`` extends the chain at ``head``.

    A batch of a new epoch must start that epoch (first_seq 1, genesis hash). Whether a batch
    that is already stored is a harmless redelivery is the caller's question, asked before this.
    The collector's ingest and ``verify`` both check links with this one function.
    """
    if head is None or epoch != head.epoch:
        if head is not None and epoch < head.epoch:
            raise ChainBroken(f"epoch {epoch} is older than the current epoch {head.epoch}")
        if first_seq != 1 or prev_hash != GENESIS_HASH:
            raise ChainBroken(
                f"epoch {epoch} must start at seq 1 with the genesis hash, got first_seq {first_seq}"
            )
        return
    if first_seq != head.last_seq + 1:
        raise ChainBroken(f"sequence gap: expected first_seq {head.last_seq + 1}, got {first_seq}")
    if prev_hash != head.last_hash:
        raise ChainBroken(f"prev_batch_hash does not match the hash of the batch ending at seq {head.last_seq}")
