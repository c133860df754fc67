"""SQL for verify's ordered, paged reads: one agent's batches and events in chain order, light rows in row order.

``collector.verify`` walks each agent's batches and events together in (epoch, seq) order, so it holds
one page of each at a time instead of the whole store. The pages are keyset pages on row values
``(epoch, seq, row_id) > (?, ?, ?)``: on both databases the unique (agent_id, epoch, seq) index
serves them as an index range (SQLite's index carries the rowid, which is ``row_id``), so a page
costs the same at the end of a long chain as at its start. ``row_id`` breaks ties, so two rows that
claim one position (a dropped unique constraint) are both returned, never skipped at a page edge.
Everything is returned as stored: the verifier must see a changed column, not fail to read it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from collector.domain.evidence import BatchRow, EventRow, TreeLeaf
from collector.storage.sql.schema import batches, events, tree_leaves

__all__ = ["AuditReadsSql", "event_row_from"]


# the events columns in EventRow's order, so a row becomes an EventRow positionally
_EVENT_ROW = tuple(events.c[f.name] for f in dataclasses.fields(EventRow))


def event_row_from(r: Any) -> EventRow:
    """An ``EventRow`` from a row selected as ``_EVENT_ROW``, every column as stored."""
    return EventRow(*r)


class AuditReadsSql:
    """The reads of the tree area that ``verify`` pages through."""

    _conn: Connection

    def stored_agent_ids(self) -> Sequence[str]:
        """Every agent id a batches or events row names, sorted."""
        union = sa.union(sa.select(batches.c.agent_id), sa.select(events.c.agent_id)).subquery()
        return [r[0] for r in self._conn.execute(sa.select(union.c.agent_id).order_by(union.c.agent_id)).all()]

    def chain_batches(self, *, agent_id: str, after: tuple[int, int, int] | None,
                      limit: int) -> Sequence[tuple[BatchRow, TreeLeaf | None]]:
        """One agent's batches after (epoch, first_seq, row_id) in chain order, each with its tree leaf."""
        from collector.storage.sql.tree import _batch_row_from, _raw_bytes

        b = batches.c
        query = (sa.select(batches, tree_leaves.c.leaf_index, tree_leaves.c.batch_row_id, tree_leaves.c.leaf_hash)
                 .select_from(batches.outerjoin(tree_leaves, tree_leaves.c.batch_row_id == b.row_id))
                 .where(b.agent_id == agent_id)
                 .order_by(b.epoch, b.first_seq, b.row_id).limit(limit))
        if after is not None:
            query = query.where(sa.tuple_(b.epoch, b.first_seq, b.row_id) > sa.tuple_(*after))
        out: list[tuple[BatchRow, TreeLeaf | None]] = []
        for r in self._conn.execute(query):  # rows as the cursor steps, not a second list
            leaf = None if r.leaf_index is None else TreeLeaf(r.leaf_index, r.batch_row_id, _raw_bytes(r.leaf_hash))
            out.append((_batch_row_from(r), leaf))
        return out

    def chain_event_rows(self, *, agent_id: str, after: tuple[int, int, int] | None, limit: int) -> Sequence[EventRow]:
        """One agent's events rows after (epoch, seq, row_id) in chain order, every column as stored."""
        e = events.c
        query = sa.select(*_EVENT_ROW).where(e.agent_id == agent_id).order_by(e.epoch, e.seq, e.row_id).limit(limit)
        if after is not None:
            query = query.where(sa.tuple_(e.epoch, e.seq, e.row_id) > sa.tuple_(*after))
        return [event_row_from(r) for r in self._conn.execute(query)]

    def batch_positions(self, *, after_row_id: int, limit: int) -> Sequence[tuple[int, str, int, int, int]]:
        """(row_id, agent_id, epoch, first_seq, last_seq) of batches rows in row order."""
        b = batches.c
        query = (sa.select(b.row_id, b.agent_id, b.epoch, b.first_seq, b.last_seq)
                 .where(b.row_id > after_row_id).order_by(b.row_id).limit(limit))
        return [tuple(r) for r in self._conn.execute(query).all()]

    def event_positions(self, *, after_row_id: int, limit: int) -> Sequence[tuple[int, str, int, int]]:
        """(row_id, agent_id, epoch, seq) of events rows in row order."""
        e = events.c
        query = sa.select(e.row_id, e.agent_id, e.epoch, e.seq).where(e.row_id > after_row_id).order_by(e.row_id).limit(limit)
        return [tuple(r) for r in self._conn.execute(query).all()]

    def leaves_without_batch(self, *, after_index: int, limit: int) -> Sequence[TreeLeaf]:
        """Tree leaves whose batch row is not stored, in leaf order."""
        from collector.storage.sql.tree import _raw_bytes

        t = tree_leaves.c
        query = (sa.select(t.leaf_index, t.batch_row_id, t.leaf_hash)
                 .where(t.leaf_index > after_index, ~sa.exists().where(batches.c.row_id == t.batch_row_id))
                 .order_by(t.leaf_index).limit(limit))
        return [TreeLeaf(r.leaf_index, r.batch_row_id, _raw_bytes(r.leaf_hash)) for r in self._conn.execute(query).all()]
