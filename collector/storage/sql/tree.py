"""SQL for tamper evidence: Merkle leaves, signed tree heads, and rows exactly as stored."""

from __future__ import annotations

from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.domain.evidence import BatchRow, EventRow, SignedTreeHead, TreeLeaf
from collector.events.models import StoredBatch
from collector.storage.base import ChainConflict
from collector.storage.sql.audit_reads import AuditReadsSql
from collector.storage.sql.schema import batches, events, tree_heads, tree_leaves

__all__ = ["TreeSql"]


class TreeSql(AuditReadsSql):
    """The tree area (verify's paged reads in collector/storage/sql/audit_reads.py)."""

    _conn: Connection

    def add_tree_head(self, head: SignedTreeHead, leaves: Sequence[TreeLeaf], *, previous_size: int) -> None:
        """Appends the leaves and their signed head atomically if the tree still has previous_size leaves."""
        current = self._conn.execute(sa.select(sa.func.max(tree_heads.c.tree_size))).scalar()
        if (current or 0) != previous_size:
            raise ChainConflict(f"the tree has {current or 0} leaves, not {previous_size}")
        try:
            with self._conn.begin_nested():
                if leaves:
                    self._conn.execute(
                        tree_leaves.insert(),
                        [dict(leaf_index=x.leaf_index, batch_row_id=x.batch_row_id, leaf_hash=x.leaf_hash) for x in leaves],
                    )
                self._conn.execute(
                    tree_heads.insert().values(
                        tree_size=head.tree_size,
                        root_hash=head.root_hash,
                        timestamp_ns=head.timestamp_ns,
                        key_id=head.key_id,
                        signature=head.signature,
                    )
                )
        except IntegrityError as exc:
            raise ChainConflict("another signer extended the tree first") from exc

    def latest_tree_head(self) -> SignedTreeHead | None:
        """Gets the signed tree head with the most leaves."""
        query = sa.select(tree_heads).order_by(tree_heads.c.tree_size.desc()).limit(1)
        row = self._conn.execute(query).first()
        return None if row is None else _tree_head_from(row)

    def list_tree_heads(self) -> Sequence[SignedTreeHead]:
        """Lists all signed tree heads, smallest tree first."""
        rows = self._conn.execute(sa.select(tree_heads).order_by(tree_heads.c.tree_size)).all()
        return [_tree_head_from(r) for r in rows]

    def list_tree_leaves(self, *, start: int, limit: int) -> Sequence[TreeLeaf]:
        """Lists the tree's leaves from leaf index ``start`` on, in leaf order."""
        query = (
            sa.select(tree_leaves)
            .where(tree_leaves.c.leaf_index >= start)
            .order_by(tree_leaves.c.leaf_index)
            .limit(limit)
        )
        rows = self._conn.execute(query).all()
        return [TreeLeaf(r.leaf_index, r.batch_row_id, _raw_bytes(r.leaf_hash)) for r in rows]

    def batches_outside_tree(self, *, limit: int) -> Sequence[BatchRow]:
        """Lists stored batches that are no leaf of the tree yet, in row order."""
        query = (
            sa.select(batches)
            .select_from(batches.outerjoin(tree_leaves, tree_leaves.c.batch_row_id == batches.c.row_id))
            .where(tree_leaves.c.leaf_index.is_(None))
            .order_by(batches.c.row_id)
            .limit(limit)
        )
        rows = self._conn.execute(query).all()
        return [_batch_row_from(r) for r in rows]

    def batch_leaves(self, *, after_row_id: int, limit: int) -> Sequence[BatchRow]:
        """Lists stored batches with row_id > after_row_id in row order, exactly as stored."""
        query = sa.select(batches).where(batches.c.row_id > after_row_id).order_by(batches.c.row_id).limit(limit)
        rows = self._conn.execute(query).all()
        return [_batch_row_from(r) for r in rows]

    def event_rows(self, *, after_row_id: int, limit: int) -> Sequence[EventRow]:
        """Lists events rows with row_id > after_row_id in row order, every column as stored."""
        query = sa.select(events).where(events.c.row_id > after_row_id).order_by(events.c.row_id).limit(limit)
        rows = self._conn.execute(query).all()
        return [
            EventRow(
                r.row_id, r.agent_id, r.epoch, r.seq, r.event_id, r.kind, r.time_ns, r.path, r.dest_path,
                r.size, r.sha256, r.user_name, r.uid, r.pid, r.process, r.exe, r.attributes,
            )
            for r in rows
        ]



def _raw_bytes(value: Any) -> bytes:
    # A column changed behind our back may hold text or NULL; the verifier must see it, not crash.
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, int):
        return str(value).encode()
    return bytes(value)


def _batch_row_from(r: Any) -> BatchRow:
    return BatchRow(
        r.row_id,
        StoredBatch(
            r.agent_id,
            r.epoch,
            r.first_seq,
            r.last_seq,
            _raw_bytes(r.batch_hash),
            _raw_bytes(r.prev_hash),
            _raw_bytes(r.signature),
            _raw_bytes(r.canonical),
            r.received_at_ns,
        ),
        r.pruned_at_ns,
    )


def _tree_head_from(r: Any) -> SignedTreeHead:
    return SignedTreeHead(
        r.tree_size, _raw_bytes(r.root_hash), r.timestamp_ns, _raw_bytes(r.key_id), _raw_bytes(r.signature)
    )
