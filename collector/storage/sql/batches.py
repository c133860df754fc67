"""SQL for chains, batches, events and detection positions (retention: retention.py).

Events go in with COPY on PostgreSQL and with one executemany of plain tuples on SQLite; both in
the transaction that moves the chain head, so a batch is stored whole or not at all.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from shoumi.batch import ChainHead

from collector.domain.records import Page
from collector.events.models import EVENT_FIELDS, EventFilter, StoredBatch, StoredEvent
from collector.ingest.codec import Attributes
from collector.storage.base import ChainConflict
from collector.storage.sql.raw import RawCursor
from collector.storage.sql.schema import EVENT_COLUMNS, batches, chain_heads, events

__all__ = ["BatchesSql", "event_row", "event_from_row"]

_COLUMNS = ("agent_id", "epoch", *EVENT_COLUMNS)
_NAMES = tuple(f.name for f in EVENT_FIELDS)
_SQLITE_INSERT = f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_PG_COPY = f"COPY events ({', '.join(_COLUMNS)}) FROM STDIN"


_ENCODE = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode


def _json(value: Any) -> str:
    text = getattr(value, "text", None)  # made once where the batch was decoded (collector/ingest/codec.py)
    if isinstance(text, str):
        return text
    return _ENCODE(dict(value)) if value else "{}"


# StoredEvent's fields are in the columns' order, attributes last, then row_id (not a column).
assert ("agent_id", "epoch", *_NAMES, "row_id") == StoredEvent._fields


def event_row(e: StoredEvent) -> tuple[Any, ...]:
    """The events row of a stored event, in ``_COLUMNS`` order."""
    return (*e[:-2], _json(e.attributes))


def event_from_row(r: Any) -> StoredEvent:
    """A stored event from its events row."""
    m = r._mapping
    values = {f.name: (json.loads(m[f.column]) if f.name == "attributes" else m[f.column]) for f in EVENT_FIELDS}
    return StoredEvent(agent_id=m["agent_id"], epoch=m["epoch"], row_id=m["row_id"], **values)


# (epoch, seq) as a row value: SQLite and PostgreSQL seek the (agent_id, epoch, seq) index to it. Written
# "epoch > ? OR (epoch = ? AND seq > ?)", SQLite searched on agent_id alone and walked the agent's whole
# history up to the position on every read: quadratic in an agent's events.
# The agent's id is not read back: the query names it (one column fewer to fetch and make a string of).
_EVENTS_AFTER = (f"SELECT {', '.join(_COLUMNS[1:])}, row_id FROM events WHERE agent_id = ? AND "
                 "(epoch, seq) > (?, ?) ORDER BY epoch, seq LIMIT ?")
_DETECTED_UPTO = "SELECT detected_epoch, detected_seq FROM chain_heads WHERE agent_id = ?"
# A rule's states by key, on the (rule, key) primary key: "(rule, key) IN (...)" made SQLite scan the
# whole table on every read. The key list is padded to a power of two (its last key again), so a
# handful of statements serve every count.
_STATES_OF = 'SELECT "key", state FROM detection_state WHERE rule = ? AND "key" IN ({})'
_STATES_CHUNK = 512
_SAVE_STATE = ('INSERT INTO detection_state (rule, "key", state) VALUES (?, ?, ?) '
               'ON CONFLICT (rule, "key") DO UPDATE SET state = excluded.state')
_MARK_DETECTED = ("UPDATE chain_heads SET detected_epoch = ?, detected_seq = ? WHERE agent_id = ? AND "
                  "(detected_epoch < ? OR (detected_epoch = ? AND detected_seq < ?))")


class BatchesSql:
    """Batch, event and retention areas."""

    _conn: Connection
    _dialect: str
    _raw: RawCursor

    def _heads_read(self) -> dict[str, tuple[Any, ...] | None] | None:
        """The chain-head rows this write transaction read or wrote, by agent; None in a read transaction.
        They cannot change under it (SQLite: BEGIN IMMEDIATE holds the write lock; PostgreSQL: chain_head
        reads them FOR UPDATE), so store_batch need not read them again."""
        if self._conn.get_execution_options().get("shoumi_read_only"):
            return None
        seen: dict[str, tuple[Any, ...] | None] | None = self.__dict__.get("_heads_seen")
        if seen is None:
            seen = self.__dict__["_heads_seen"] = {}
        return seen

    # --- chains and batches -------------------------------------------------------------------
    def chain_head(self, agent_id: str) -> ChainHead | None:
        """Gets where the agent's chain stands."""
        seen = self._heads_read()
        lock = " FOR UPDATE" if seen is not None and self._dialect == "postgresql" else ""
        row = self._raw.one(f"SELECT epoch, last_seq, last_hash FROM chain_heads WHERE agent_id = ?{lock}", (agent_id,))
        if seen is not None:
            seen[agent_id] = row
        return None if row is None else ChainHead(row[0], row[1], bytes(row[2]))

    def batch_hash_at(self, *, agent_id: str, epoch: int, first_seq: int) -> bytes | None:
        """Gets the hash of the stored batch that starts at (agent, epoch, first_seq)."""
        row = self._raw.one("SELECT batch_hash FROM batches WHERE agent_id = ? AND epoch = ? AND first_seq = ?",
                            (agent_id, epoch, first_seq))
        value = None if row is None else row[0]
        return None if value is None else bytes(value)

    def store_batch(self, batch: StoredBatch, events_: Sequence[StoredEvent], *, expected_head: ChainHead | None) -> None:
        """Stores a verified batch and its events if the chain head has not moved."""
        # FOR UPDATE locks the head row on PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the write lock
        lock = " FOR UPDATE" if self._dialect == "postgresql" else ""
        seen = self._heads_read()
        if seen is not None and batch.agent_id in seen:
            row = seen[batch.agent_id]
        else:
            row = self._raw.one(f"SELECT epoch, last_seq, last_hash FROM chain_heads WHERE agent_id = ?{lock}",
                                (batch.agent_id,))
        current = None if row is None else ChainHead(row[0], row[1], bytes(row[2]))
        if current != expected_head:
            raise ChainConflict(f"chain head of {batch.agent_id} moved")
        # No savepoint: a ChainConflict undoes the caller's whole transaction, which then looks again.
        try:
            if row is None:
                self._raw.run("INSERT INTO chain_heads (agent_id, epoch, last_seq, last_hash, detected_epoch, "
                              "detected_seq) VALUES (?, ?, ?, ?, 0, 0)",
                              (batch.agent_id, batch.epoch, batch.last_seq, batch.batch_hash))
            else:
                self._raw.run("UPDATE chain_heads SET epoch = ?, last_seq = ?, last_hash = ? WHERE agent_id = ?",
                              (batch.epoch, batch.last_seq, batch.batch_hash, batch.agent_id))
            self._raw.run("INSERT INTO batches (agent_id, epoch, first_seq, last_seq, batch_hash, prev_hash, signature, "
                          "canonical, received_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (batch.agent_id, batch.epoch, batch.first_seq, batch.last_seq, batch.batch_hash,
                           batch.prev_hash, batch.signature, batch.canonical, batch.received_at_ns))
            self._insert_events([event_row(e) for e in events_])
            if seen is not None:
                seen[batch.agent_id] = (batch.epoch, batch.last_seq, batch.batch_hash)
        except IntegrityError as exc:
            raise ChainConflict(f"batch of {batch.agent_id} already stored") from exc
        except self._conn.dialect.dbapi.IntegrityError as exc:  # type: ignore[union-attr]
            # the events go in through the driver itself (COPY, executemany), which raises its own
            raise ChainConflict(f"events of {batch.agent_id} already stored") from exc

    def _insert_events(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        dbapi = self._conn.connection.driver_connection
        assert dbapi is not None
        if self._dialect == "postgresql":
            with dbapi.cursor() as cur, cur.copy(_PG_COPY) as copy:
                for r in rows:
                    copy.write_row(r)
        else:
            cur = dbapi.cursor()
            try:
                cur.executemany(_SQLITE_INSERT, rows)
            finally:
                cur.close()

    def list_batches(self, *, agent_id: str | None = None) -> Sequence[StoredBatch]:
        """Lists stored batches in ingest order."""
        query = sa.select(batches).order_by(batches.c.row_id)
        if agent_id is not None:
            query = query.where(batches.c.agent_id == agent_id)
        return [_batch_from(r) for r in self._conn.execute(query).all()]

    # --- detection positions ------------------------------------------------------------------
    def detected_upto(self, agent_id: str) -> tuple[int, int]:
        """Returns (epoch, seq) up to which detection has run over the agent's stored events."""
        row = self._raw.one(_DETECTED_UPTO, (agent_id,))
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def mark_detected(self, *, agent_id: str, epoch: int, seq: int) -> None:
        """Records that detection has run up to (epoch, seq); never moves backwards."""
        self._raw.run(_MARK_DETECTED, (epoch, seq, agent_id, epoch, epoch, seq))

    def agents_behind_detection(self, *, limit: int) -> Sequence[str]:
        """Agents whose chain head is ahead of their detection position."""
        c = chain_heads.c
        query = (sa.select(c.agent_id)
                 .where(sa.or_(c.epoch > c.detected_epoch, sa.and_(c.epoch == c.detected_epoch, c.last_seq > c.detected_seq)))
                 .order_by(c.agent_id).limit(limit))
        return [r[0] for r in self._conn.execute(query).all()]

    def claim_detection(self) -> bool:
        """Takes the detection lock for this transaction; False if another collector holds it."""
        if self._dialect != "postgresql":
            return True  # SQLite's BEGIN IMMEDIATE already serializes every writer
        return bool(self._conn.exec_driver_sql("SELECT pg_try_advisory_xact_lock(7242002)").scalar())

    def load_rule_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The stored states of these (rule, key) pairs."""
        by_rule: dict[str, list[str]] = {}
        for rule, key in keys:
            by_rule.setdefault(rule, []).append(key)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        loads = json.loads
        for rule, wanted in by_rule.items():
            for i in range(0, len(wanted), _STATES_CHUNK):
                chunk = wanted[i:i + _STATES_CHUNK]
                size = 1 << (len(chunk) - 1).bit_length()
                sql = _STATES_OF.format(", ".join("?" * size))
                for key, state in self._raw.all(sql, (rule, *chunk, *[chunk[-1]] * (size - len(chunk)))):
                    out[(rule, key)] = loads(state)
        return out

    def save_rule_states(self, states: dict[tuple[str, str], dict[str, Any]]) -> None:
        """Stores (replaces) these (rule, key) states."""
        if not states:
            return
        dumps = json.dumps
        self._raw.many(_SAVE_STATE, [(rule, key, dumps(state, separators=(",", ":"), ensure_ascii=False))
                                     for (rule, key), state in states.items()])

    def detection_lag(self) -> int:
        """Events stored but not yet run through detection, over all agents."""
        c = chain_heads.c
        behind = sa.case((c.epoch == c.detected_epoch, c.last_seq - c.detected_seq), else_=c.last_seq)
        return int(self._conn.execute(sa.select(sa.func.coalesce(sa.func.sum(behind), 0))).scalar_one())

    # --- events -------------------------------------------------------------------------------
    def list_events(self, flt: EventFilter, *, cursor: int | None, limit: int) -> Page:
        """Lists events in ingest order after the cursor, matching the filter."""
        query = sa.select(events).order_by(events.c.row_id).limit(limit + 1)
        if cursor is not None:
            query = query.where(events.c.row_id > cursor)
        if flt.agent_id is not None:
            query = query.where(events.c.agent_id == flt.agent_id)
        if flt.kind is not None:
            query = query.where(events.c.kind == flt.kind)
        if flt.user is not None:
            query = query.where(events.c.user_name == flt.user)
        if flt.since_ns is not None:
            query = query.where(events.c.time_ns >= flt.since_ns)
        if flt.until_ns is not None:
            query = query.where(events.c.time_ns < flt.until_ns)
        rows = self._conn.execute(query).all()
        items = tuple(event_from_row(r) for r in rows[:limit])
        more = len(rows) > limit
        return Page(items, str(items[-1].row_id) if more and items else None)

    def events_in_window(self, *, user: str, kind: str, since_ns: int, until_ns: int, cap: int) -> Sequence[StoredEvent]:
        """Lists one user's events of a kind with since_ns <= time <= until_ns, oldest first."""
        query = (sa.select(events)
                 .where(events.c.user_name == user, events.c.kind == kind, events.c.time_ns >= since_ns,
                        events.c.time_ns <= until_ns)
                 .order_by(events.c.time_ns, events.c.row_id).limit(cap))
        return [event_from_row(r) for r in self._conn.execute(query).all()]

    def events_after(self, *, agent_id: str, epoch: int, seq: int, limit: int) -> Sequence[StoredEvent]:
        """One agent's events after (epoch, seq), in chain order (detection's read: on the driver's cursor)."""
        rows = self._raw.all(_EVENTS_AFTER, (agent_id, epoch, seq, limit))
        # tuple.__new__ is what StoredEvent._make runs (the row has every field, in order)
        new, cls, lazy = tuple.__new__, StoredEvent, Attributes  # attributes parsed on first use: most rules never look
        return [new(cls, (agent_id, *r[:-2], {} if r[-2] == "{}" else lazy(r[-2]), r[-1])) for r in rows]

    def count_events(self) -> int:
        """Counts stored events."""
        return int(self._conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())


def _batch_from(r: Any) -> StoredBatch:
    return StoredBatch(r.agent_id, r.epoch, r.first_seq, r.last_seq, bytes(r.batch_hash), bytes(r.prev_hash),
                       bytes(r.signature), bytes(r.canonical), r.received_at_ns)
