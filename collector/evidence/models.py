"""Values of evidence bundles and witnessed tree heads. Pure: no SQL, no files, no network.

``StoredCosignature`` is one witness's cosignature on one signed tree head, as the collector keeps it
(collector/evidence/witnesses.py asks for them, the store keeps them, the bundle carries them).
``WitnessConfig`` is one witness the collector submits its heads to (settings: ``witnesses``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StoredCosignature", "CertificateRecord"]


@dataclass(frozen=True)
class StoredCosignature:
    """A witness's cosignature (C2SP tlog-cosignature style) on the head of ``tree_size`` leaves."""

    witness: str
    witness_key_id: bytes
    tree_size: int
    root_hash: bytes
    timestamp: int  # unix seconds the witness signed at
    signature: bytes
    received_at_ns: int


@dataclass(frozen=True)
class CertificateRecord:
    """A client certificate the collector's CA issued to an agent (its PEM is not kept, only this)."""

    serial: str
    agent_id: str
    not_before_ns: int
    not_after_ns: int
    revoked_at_ns: int | None
