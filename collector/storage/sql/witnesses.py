"""SQL for witnessed tree heads and the reads a case's evidence bundle needs (collector/evidence)."""

from __future__ import annotations

from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.domain.evidence import BatchRow, SignedTreeHead, TreeLeaf
from collector.evidence.models import CertificateRecord, StoredCosignature
from collector.storage.sql.schema import batches, certificates, tree_heads, tree_leaves, witness_cosignatures

__all__ = ["WitnessesSql"]


class WitnessesSql:
    """The witness area."""

    _conn: Connection

    def add_cosignature(self, c: StoredCosignature) -> bool:
        """Keeps a cosignature; False (nothing written) if that witness already cosigned that size."""
        try:
            with self._conn.begin_nested():
                self._conn.execute(witness_cosignatures.insert().values(
                    witness=c.witness, tree_size=c.tree_size, witness_key_id=c.witness_key_id, root_hash=c.root_hash,
                    cosigned_at=c.timestamp, signature=c.signature, received_at_ns=c.received_at_ns))
        except IntegrityError:
            return False
        return True

    def cosignatures(self, *, tree_sizes: Sequence[int] | None = None) -> Sequence[StoredCosignature]:
        """Cosignatures (on these sizes, or all), by tree size then witness."""
        w = witness_cosignatures.c
        query = sa.select(witness_cosignatures).order_by(w.tree_size, w.witness)
        if tree_sizes is not None:
            query = query.where(w.tree_size.in_(list(tree_sizes)))
        return [_cosignature_from(r) for r in self._conn.execute(query)]

    def latest_cosignature(self, witness: str) -> StoredCosignature | None:
        """The cosignature of this witness on the largest head."""
        w = witness_cosignatures.c
        row = self._conn.execute(sa.select(witness_cosignatures).where(w.witness == witness)
                                 .order_by(w.tree_size.desc()).limit(1)).first()
        return None if row is None else _cosignature_from(row)

    def tree_head_at(self, tree_size: int) -> SignedTreeHead | None:
        """The signed head of exactly ``tree_size`` leaves."""
        from collector.storage.sql.tree import _tree_head_from

        row = self._conn.execute(sa.select(tree_heads).where(tree_heads.c.tree_size == tree_size)).first()
        return None if row is None else _tree_head_from(row)

    def first_head_covering(self, leaf_index: int) -> SignedTreeHead | None:
        """The smallest signed head whose tree holds leaf ``leaf_index``."""
        from collector.storage.sql.tree import _tree_head_from

        row = self._conn.execute(sa.select(tree_heads).where(tree_heads.c.tree_size > leaf_index)
                                 .order_by(tree_heads.c.tree_size).limit(1)).first()
        return None if row is None else _tree_head_from(row)

    def batch_of_event(self, *, agent_id: str, epoch: int, seq: int) -> tuple[BatchRow, TreeLeaf | None] | None:
        """The stored batch that carried event (agent, epoch, seq), with its tree leaf (None if none yet)."""
        from collector.storage.sql.tree import _batch_row_from, _raw_bytes

        b = batches.c
        row = self._conn.execute(
            sa.select(batches, tree_leaves.c.leaf_index, tree_leaves.c.batch_row_id, tree_leaves.c.leaf_hash)
            .select_from(batches.outerjoin(tree_leaves, tree_leaves.c.batch_row_id == b.row_id))
            .where(b.agent_id == agent_id, b.epoch == epoch, b.first_seq <= seq, b.last_seq >= seq)
            .order_by(b.first_seq.desc()).limit(1)).first()
        if row is None:
            return None
        leaf = None if row.leaf_index is None else TreeLeaf(row.leaf_index, row.batch_row_id, _raw_bytes(row.leaf_hash))
        return _batch_row_from(row), leaf

    def agent_certificates(self, agent_id: str) -> Sequence[CertificateRecord]:
        """The client certificates issued to an agent, oldest first."""
        c = certificates.c
        rows = self._conn.execute(sa.select(certificates).where(c.agent_id == agent_id).order_by(c.not_before_ns))
        return [CertificateRecord(str(r.serial), r.agent_id, r.not_before_ns, r.not_after_ns, r.revoked_at_ns)
                for r in rows]


def _cosignature_from(r: Any) -> StoredCosignature:
    return StoredCosignature(r.witness, bytes(r.witness_key_id), int(r.tree_size), bytes(r.root_hash),
                             int(r.cosigned_at), bytes(r.signature), int(r.received_at_ns))
