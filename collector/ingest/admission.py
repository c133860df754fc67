"""The ingest decision for one batch, as a pure function of values: store, acknowledge again, or refuse.

No protobuf, no storage, no clock. The adapter reads the batch off the wire (collector/ingest/codec.py),
checks its signature with the enrolled key, and asks the store what it knows; ``admit`` decides.

Theory of operation, in the order the checks run:
1. **shape**: ids, counts, contiguous sequence numbers (``shoumi.batch.check_shape``, before this);
2. **identity**: the stream's client certificate names the batch's agent, was issued to it by this
   collector and is not revoked; the agent is enrolled and not revoked;
3. **signature**: the batch verifies under the agent's enrolled Ed25519 key;
4. **redelivery**: a batch already stored at the same position with the same hash is acknowledged
   again and stores nothing; another hash at that position is a forgery;
5. **chain**: otherwise the batch must continue the agent's chain (``shoumi.batch.check_link``).
"""

from __future__ import annotations

from dataclasses import dataclass

from shoumi.batch import ChainBroken, ChainHead, check_link

from collector.fleet.models import AgentRecord

__all__ = ["Offered", "Known", "Refuse", "Store", "Redelivered", "Decision", "admit", "TAMPER_REASONS"]

# Refusals that mean someone or something altered, forged or replayed a batch of an enrolled agent.
TAMPER_REASONS = frozenset({"bad_signature", "chain_broken", "conflicting_batch", "identity_mismatch"})


@dataclass(frozen=True)
class Offered:
    """What a stream offers: the batch's position and, if its signature verified, its hash."""

    agent_id: str
    epoch: int
    first_seq: int
    last_seq: int
    prev_hash: bytes
    digest: bytes | None  # None: the signature does not verify under the enrolled key (or no agent)


@dataclass(frozen=True)
class Known:
    """What the store knows about the batch's agent and position."""

    agent: AgentRecord | None
    certificate: tuple[str, bool] | None  # (agent id, revoked) of the stream's certificate
    stored_hash: bytes | None  # hash of the batch stored at (agent, epoch, first_seq)
    head: ChainHead | None


@dataclass(frozen=True)
class Refuse:
    """Store nothing; end the stream with this status."""

    status: str  # a gRPC status code name
    reason: str
    message: str


@dataclass(frozen=True)
class Store:
    """Store the batch as the next link after ``head``."""

    head: ChainHead | None


@dataclass(frozen=True)
class Redelivered:
    """Already stored: acknowledge again, store nothing."""


Decision = Refuse | Store | Redelivered


def admit(offered: Offered, known: Known, *, stream_agent: str | None, stream_serial: int | None) -> Decision:
    """Decides what to do with one shape-checked batch.

    ``stream_agent`` and ``stream_serial`` come from the stream's client certificate; None only in
    plaintext development mode.
    """
    if stream_agent is not None and stream_agent != offered.agent_id:
        return Refuse("PERMISSION_DENIED", "identity_mismatch",
                      f"the client certificate belongs to agent {stream_agent}, the batch names {offered.agent_id}")
    if stream_serial is not None:
        if known.certificate is None or known.certificate[0] != offered.agent_id or known.certificate[1]:
            return Refuse("PERMISSION_DENIED", "revoked_certificate",
                          f"certificate {stream_serial:x} is revoked or was not issued to {offered.agent_id}")
    if known.agent is None:
        return Refuse("UNAUTHENTICATED", "unknown_agent", f"unknown agent {offered.agent_id!r}")
    if known.agent.revoked_at_ns is not None:
        return Refuse("PERMISSION_DENIED", "revoked_agent", f"agent {offered.agent_id} is revoked")
    if offered.digest is None:
        return Refuse("PERMISSION_DENIED", "bad_signature", "signature does not verify under the agent's enrolled key")
    if known.stored_hash == offered.digest:
        return Redelivered()
    if known.stored_hash is not None:
        return Refuse("FAILED_PRECONDITION", "conflicting_batch",
                      f"a different batch is already stored at epoch {offered.epoch} seq {offered.first_seq}")
    try:
        check_link(epoch=offered.epoch, first_seq=offered.first_seq, prev_hash=offered.prev_hash, head=known.head)
    except ChainBroken as exc:
        return Refuse("FAILED_PRECONDITION", exc.reason, str(exc))
    return Store(known.head)
