"""Re-verifies a whole collector store and names the exact place of anything changed.

Run as ``shoumi-collector verify --data-dir DIR``. Reads only; never repairs, never signs.

Theory of operation
-------------------
The truth is what the agents signed: each stored batch keeps its canonical bytes and signature.
From those alone the verifier re-derives everything else and compares it with what is stored.
It walks one agent at a time: that agent's batches (table ``batches``, each with the tree leaf that
names its row) and its events (table ``events``) together in (epoch, seq) order, a page of each at a
time (``TreeArea.chain_batches`` and ``chain_event_rows``, keyset pages on the unique index):

1. **Batches**: the canonical bytes decode and are canonical, the signature verifies under the
   agent's enrolled key, and the columns (agent, epoch, seqs, prev_hash, batch_hash) say what the
   signed bytes say.
2. **Chains**: in (epoch, seq) order every epoch starts at seq 1 with the genesis hash and every
   batch names the previous one's hash with no gap (``shoumi.batch.check_link``, the rule ingest
   applies); ``chain_heads`` names the last batch (a deleted tail).
3. **Events**: as the walk passes each signed batch, the event rows at its positions are exactly
   its signed events, field by field; a row at a position no signed batch holds is extra, a signed
   event without its row is missing.
4. **Tree**: every signed tree head's signature, the root of its first tree_size leaves, consistency
   between successive heads, and (in the walk) that each leaf still is the batch row it was signed
   as, so a batch deleted, swapped or rewritten after signing is named even if the rest agrees.
5. **Retention**: every pruned batch was pruned by a recorded retention run, was received before
   that run's cutoff, and the runs' counts agree with the batches marked pruned.
6. **Audit log**: in id order every row names the previous row's hash (the first names the
   genesis hash), its row_hash is the hash of its own columns, and the recorded head names the
   last row; the first broken row is named (``audit.chain``, ``audit.row``, ``audit.head``) and the
   walk stops there, since every later row is suspect with it. After audit retention the chain starts
   at the newest anchor (``audit_anchors``: the last deleted row's id and hash, the rows up to it).

What needs row order is read apart, in row order, as light positions (``batch_positions``,
``event_positions``: row id, agent, epoch, seq): a batch stored after one it comes before
(``chain.order``) and an event row stored after a later one (``event.order``). Rows the walk could
place in no chain (undecodable batches, extra events) are left out there, as before.

A batch whose agent_id column was changed is named (``batch.column``) where it is stored, and the
chain of the agent that signed it shows the gap; a batch whose epoch or seq columns were changed is
named the same way and walked at the place its columns claim, so its events show as extra and missing.

Retention versus tampering
--------------------------
Retention (collector/retention/) deletes the events of batches past their retention and blanks
their canonical bytes, but keeps each batch row with its batch_hash, prev_hash, signature, receipt
time and ``pruned_at_ns``, and keeps its Merkle leaf. It prunes only batches that already are
leaves under a signed tree head. The tree therefore stays verifiable after deletion: a leaf is the
hash of the signed batch (canonical bytes and signature), the leaf hashes are what the heads' roots
and consistency proofs are computed from, and they are kept; only the data under a leaf is gone.
A batch with ``pruned_at_ns`` set is checked by what is kept: its stored batch_hash and prev_hash
link into the agent's chain (``shoumi.batch.check_link``, with the neighbours' signed hashes), its
row is a leaf of the signed tree whose stored leaf hash reproduces the signed roots, and the run
that pruned it is recorded. Its content can no longer be re-derived; that is the point of deletion.
Named as findings: a pruned batch whose events are still (or again) stored, a batch whose canonical
bytes are blank without ``pruned_at_ns`` (erased, not pruned), a pruned batch received after its
run's cutoff, pruned without a recorded run or outside the tree, and a pruned batch whose hash no
longer links to its neighbours or to the chain head.

Memory and parallelism
----------------------
A walking process holds one page of batches (32, each of at most 1,000 events) and one page of
event rows (1,000), the batch being checked and its decoded events; per agent a few values (the
previous link, the furthest signed event, the last position seen in row order); per tree leaf one
32-byte hash (the heads' roots and consistency proofs are computed from them: 1.3 MB for 10 million
events in batches of 250); and what it finds. Nothing is held per event. With ``--jobs N`` (default:
one per CPU) agents are walked in N worker processes, each opening its own store from the same data
directory or URL; results are merged in agent order, so the report is the same, in the same order,
whatever N. With N = 1 everything is read in one transaction, one snapshot; with N > 1 each agent is
read in a snapshot of its own (and the tree and the row order in others): verify a store that is
being written with ``--jobs 1``. Measured by ``python bench/verify.py --jobs 1,2`` on 250,000
events (SQLite, 8 agents, batches of 250, a 2-core machine at load 8 to 12, so the wall clock is
noisy): one job 17 CPU s, peak RSS 77 MB, 21 to 26 bytes an event over the process before it (a
constant: pages and caches); two jobs 15 CPU s in all, 30 s instead of 43 s of wall clock, each
worker a fixed ~36 MB PSS. The verifier before held ~556 bytes an event (200 MB here, ~5.6 GB for
10 million events) and took 26 CPU s. Details: docs/tamper-evidence.md, "Running verify on a large
store".
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import operator
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, overload

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from shoumi import batch as chain
from shoumi.batch import ChainHead
from shoumi.v1 import events_pb2

from collector.audit.models import GENESIS, audit_row_hash, canonical_details
from collector.domain.evidence import BatchRow, EventRow, SignedTreeHead, TreeLeaf, batch_leaf_hash, key_id, tree_head_signature_ok
from collector.domain.merkle import HASH_SIZE, TreeBuilder, consistency_proof, verify_consistency
from collector.events.models import StoredEvent
from collector.ingest.codec import decode_events
from collector.retention.models import RetentionRun
from collector.storage.base import Store, Transaction

__all__ = ["Finding", "VerifyReport", "default_jobs", "verify_store"]

_PAGE = 2000  # tree leaves and light row positions a page
_EVENT_PAGE = 1000  # one agent's event rows a page
_BATCH_PAGE = 32  # one agent's batches a page (each of up to MAX_EVENTS_PER_BATCH events)
# The events columns and the StoredEvent fields they hold, in report order.
_EVENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("event_id", "id"), ("kind", "kind"), ("time_ns", "time_ns"), ("path", "path"), ("dest_path", "dest_path"),
    ("size", "size"), ("sha256", "sha256"), ("user_name", "user"), ("uid", "uid"), ("pid", "pid"),
    ("process", "process"), ("exe", "exe"), ("attributes", "attributes"),
)


@dataclass(frozen=True)
class Finding:
    """One thing that is wrong, and exactly where: table, row, agent, epoch, seq and column."""

    check: str
    table: str
    detail: str
    row_id: int | None = None
    agent_id: str | None = None
    epoch: int | None = None
    seq: str | None = None
    column: str | None = None

    def where(self) -> str:
        """Returns the place as one readable phrase."""
        parts = [f"table {self.table}"]
        if self.row_id is not None:
            parts.append(f"row {self.row_id}")
        if self.agent_id is not None:
            parts.append(f"agent {self.agent_id}")
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}")
        if self.seq is not None:
            parts.append(f"seq {self.seq}")
        if self.column is not None:
            parts.append(f"column {self.column}")
        return ", ".join(parts)


@dataclass
class VerifyReport:
    """What the verifier checked and found."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    batches: int = 0
    events: int = 0
    agents: int = 0
    tree_heads: int = 0
    tree_leaves: int = 0
    tree_key_id: bytes | None = None
    pruned_batches: int = 0
    retention_runs: list[int] = field(default_factory=list)  # ids of the runs that pruned them
    audit_rows: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.findings

    def render(self) -> str:
        """Returns the report as text for a person."""
        pruned = ""
        if self.pruned_batches:
            runs = ", ".join(f"#{r}" for r in self.retention_runs) or "none recorded"
            pruned = f" ({self.pruned_batches} pruned by retention runs {runs})"
        lines = [
            f"checked {self.batches} batches{pruned}, {self.events} events, {self.agents} agents, "
            f"{self.tree_heads} signed tree heads over {self.tree_leaves} leaves, {self.audit_rows} audit rows",
        ]
        if self.tree_key_id is not None:
            lines.append(f"tree heads checked under key id {self.tree_key_id.hex()}")
        lines += [f"note: {n}" for n in self.notes]
        for f in self.findings:
            lines.append(f"FAIL {f.check}: {f.where()}: {f.detail}")
        lines.append("OK: the store is intact" if self.ok else f"TAMPERED: {len(self.findings)} finding(s)")
        return "\n".join(lines)


def _attributes_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _expected_values(e: StoredEvent) -> tuple[Any, ...]:
    return tuple(_attributes_text(dict(e.attributes)) if attr == "attributes" else getattr(e, attr)
                 for _col, attr in _EVENT_FIELDS)


def _stored_values(r: EventRow) -> tuple[Any, ...]:
    out = []
    for col, _attr in _EVENT_FIELDS:
        value = getattr(r, col)
        if col == "attributes":
            try:
                value = _attributes_text(json.loads(value))
            except (TypeError, ValueError):
                value = f"<not JSON: {value!r}>"
        out.append(value)
    return tuple(out)


# Fast comparison of a signed event with its row: the scalar fields at once, then the attributes text as
# ingest stores it (sorted keys); only if that differs is the stored JSON parsed (a reformatting is no change).
assert _EVENT_FIELDS[-1] == ("attributes", "attributes")
_SIGNED_SCALARS = operator.attrgetter(*(attr for _col, attr in _EVENT_FIELDS[:-1]))
_STORED_SCALARS = operator.attrgetter(*(col for col, _attr in _EVENT_FIELDS[:-1]))


def _same(e: StoredEvent, r: EventRow) -> bool:
    if _SIGNED_SCALARS(e) != _STORED_SCALARS(r):
        return False
    want = _attributes_text(dict(e.attributes))
    return bool(r.attributes == want) or _stored_values(r)[-1] == want


def _shown(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else repr(value)


def _decode(row: BatchRow) -> events_pb2.EventBatch | None:
    canonical = row.batch.canonical
    if not canonical.startswith(chain.DOMAIN):
        return None
    try:
        parsed = events_pb2.EventBatch.FromString(canonical[len(chain.DOMAIN):])
    except DecodeError:
        return None
    parsed.signature = row.batch.signature
    return parsed


@dataclass(frozen=True)
class _Link:
    """A batch as its signed bytes say it is, and where it is stored."""

    row_id: int
    epoch: int
    first_seq: int
    last_seq: int
    digest: bytes
    prev: bytes

    @property
    def seqs(self) -> str:
        return f"{self.first_seq}..{self.last_seq}"


@dataclass(frozen=True)
class _Context:
    """What each agent's walk needs of the whole store, read before the walks: small and picklable."""

    runs: tuple[RetentionRun, ...]
    newest_signed_row: int  # the highest batch row a tree leaf names


@dataclass
class _AgentResult:
    """What one agent's walk found and counted; the coordinator merges these in agent order."""

    agent_id: str
    findings: list[Finding] = field(default_factory=list)
    batches: int = 0
    events: int = 0
    pruned_batches: int = 0
    unsigned: int = 0  # batches not yet under a signed tree head
    unsigned_rows: tuple[int, int] | None = None  # the lowest and highest such row
    late: list[tuple[int, str, int, str]] = field(default_factory=list)  # unsigned rows older than signed ones
    marked: dict[int, int] = field(default_factory=dict)  # pruned_at_ns -> batches marked pruned then
    used_runs: set[int] = field(default_factory=set)
    unlinked_batches: set[int] = field(default_factory=set)  # rows in no chain (undecodable): skipped by chain.order
    unmatched_events: set[int] = field(default_factory=set)  # rows no signed event matched: skipped by event.order


class _LeafHashes(Sequence[bytes]):
    """The tree's leaf hashes packed 32 bytes each, for the roots and consistency proofs (32 B a leaf)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def append(self, value: bytes) -> None:
        if len(value) != HASH_SIZE:  # a changed column: stand in a value no leaf hash is, so no root reproduces
            value = hashlib.sha256(b"shoumi.verify: not a leaf hash\n" + value).digest()
        self._buf += value

    def __len__(self) -> int:
        return len(self._buf) // HASH_SIZE

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not 0 <= index < len(self):
            raise IndexError(index)
        return bytes(self._buf[index * HASH_SIZE:(index + 1) * HASH_SIZE])


def _key(row: EventRow) -> tuple[int, int] | None:
    """An event row's place in its agent's chain, or None if the stored columns are not numbers."""
    if type(row.epoch) is int and type(row.seq) is int:
        return (row.epoch, row.seq)
    return None


class _Events:
    """One agent's event rows in chain order, one page at a time, with one row of lookahead."""

    def __init__(self, tx: Transaction, agent_id: str) -> None:
        self.tx, self.agent_id = tx, agent_id
        self.page: Sequence[EventRow] = ()
        self.i = 0
        self.after: tuple[int, int, int] | None = None
        self.done = False
        self.count = 0

    def peek(self) -> EventRow | None:
        if self.i >= len(self.page):
            if self.done:
                return None
            self.page = ()  # let the last page go before the next is read: one page at a time
            self.page = self.tx.chain_event_rows(agent_id=self.agent_id, after=self.after, limit=_EVENT_PAGE)
            self.i = 0
            self.done = len(self.page) < _EVENT_PAGE
            if not self.page:
                return None
            last = self.page[-1]
            self.after = (last.epoch, last.seq, last.row_id)
        return self.page[self.i]

    def take(self) -> EventRow:
        row = self.page[self.i]
        self.i += 1
        self.count += 1
        return row


class _AgentWalk:
    """Checks one agent: its batches and its events walked together in (epoch, seq) order.

    Holds one page of batches, one page of events and the batch being checked; everything else it
    keeps is per agent (the previous link, the furthest signed event) or per finding.
    """

    def __init__(self, tx: Transaction, agent_id: str, ctx: _Context) -> None:
        self.tx = tx
        self.ctx = ctx
        self.res = _AgentResult(agent_id)
        self.events = _Events(tx, agent_id)
        self.prev: _Link | None = None  # the previous batch in chain order
        self.last: _Link | None = None  # the furthest batch in chain order: chain_heads must name it
        self.matched: tuple[int, int] | None = None  # the last event position matched to a signed event
        self.signed_upto: tuple[int, int, int] | None = None  # (epoch, seq, batch row) of the furthest signed event
        self.keys: dict[Any, bytes | None] = {}  # enrolled agents' public keys, by agent id
        self.runs_at: dict[int, list[RetentionRun]] = defaultdict(list)
        for run in ctx.runs:
            self.runs_at[run.at_ns].append(run)

    def fail(self, check: str, table: str, detail: str, **where: Any) -> None:
        self.res.findings.append(Finding(check, table, detail, **where))

    def public_key(self, agent_id: Any) -> bytes | None:
        if agent_id not in self.keys:
            agent = self.tx.get_agent(agent_id) if isinstance(agent_id, str) else None
            self.keys[agent_id] = None if agent is None else agent.public_key
        return self.keys[agent_id]

    def run(self) -> _AgentResult:
        after: tuple[int, int, int] | None = None
        while True:
            page = self.tx.chain_batches(agent_id=self.res.agent_id, after=after, limit=_BATCH_PAGE)
            for row, leaf in page:
                self.batch(row, leaf)
            if len(page) < _BATCH_PAGE:
                break
            last = page[-1][0]
            after = (last.batch.epoch, last.batch.first_seq, last.row_id)
            del page, row, leaf, last  # one page at a time
        self.drain_before(None)  # no signed batch holds what is left
        self.res.events = self.events.count
        self.check_head()
        return self.res

    # batches --------------------------------------------------------------------------------
    def batch(self, row: BatchRow, leaf: TreeLeaf | None) -> None:
        self.res.batches += 1
        b = row.batch
        where: dict[str, Any] = dict(row_id=row.row_id, agent_id=b.agent_id, epoch=b.epoch, seq=f"{b.first_seq}..{b.last_seq}")
        if row.pruned_at_ns is not None:
            self.pruned_batch(row, leaf, where)
        else:
            self.kept_batch(row, leaf, where, pruned=False)

    def pruned_batch(self, row: BatchRow, leaf: TreeLeaf | None, where: dict[str, Any]) -> None:
        """A batch retention pruned: only its kept columns can be checked, and they are linked."""
        b = row.batch
        self.res.pruned_batches += 1
        self.retention(row, where)
        if leaf is None:
            self.fail("retention.unsigned", "batches", "pruned but no tree leaf holds it: nothing signed vouches for "
                      "its kept hashes (retention prunes only batches under a signed tree head)", **where)
        if b.canonical:
            self.fail("retention.not_blank", "batches", f"marked pruned (pruned_at_ns {row.pruned_at_ns}) but still "
                      "holds its signed bytes, which retention blanks", column="pruned_at_ns", **where)
            self.kept_batch(row, leaf, where, pruned=True)
            return
        if not (isinstance(b.first_seq, int) and isinstance(b.last_seq, int) and 1 <= b.first_seq <= b.last_seq
                and b.last_seq - b.first_seq < chain.MAX_EVENTS_PER_BATCH
                and len(b.batch_hash) == 32 and len(b.prev_hash) == 32):
            self.fail("retention.columns", "batches", "the kept columns of a pruned batch are not those of a batch "
                      "(seqs, or 32-byte batch_hash and prev_hash)", **where)
            self.res.unlinked_batches.add(row.row_id)
            return
        if self.public_key(b.agent_id) is None:
            self.fail("batch.agent", "batches", "pruned batch of an agent that is not enrolled (table agents)", **where)
        self.link(_Link(row.row_id, b.epoch, b.first_seq, b.last_seq, b.batch_hash, b.prev_hash))
        # its events must be gone
        self.drain_before((b.epoch, b.first_seq))
        while (nxt := self.events.peek()) is not None and (k := _key(nxt)) is not None and k <= (b.epoch, b.last_seq):
            e = self.events.take()
            self.res.unmatched_events.add(e.row_id)
            self.fail("retention.event_present", "events", f"batch row {row.row_id} was pruned by retention, but this "
                      "event of it is stored: kept back or re-inserted, and no signature covers it now",
                      row_id=e.row_id, agent_id=str(e.agent_id), epoch=e.epoch, seq=str(e.seq))

    def retention(self, row: BatchRow, where: dict[str, Any]) -> None:
        """A recorded run pruned it, and it was received before that run's cutoff."""
        at = row.pruned_at_ns
        assert at is not None
        self.res.marked[at] = self.res.marked.get(at, 0) + 1
        mine = self.runs_at.get(at)
        if not mine:
            self.fail("retention.run", "batches", f"marked pruned at {at} but no retention run is recorded then "
                      "(table retention_runs)", column="pruned_at_ns", **where)
            return
        self.res.used_runs.update(r.id for r in mine if r.id is not None)
        cutoff = min(r.before_ns for r in mine)
        if not row.batch.received_at_ns < cutoff:
            ids = ", ".join(f"#{r.id}" for r in mine)
            self.fail("retention.cutoff", "batches", f"received at {row.batch.received_at_ns}, not before the cutoff "
                      f"{cutoff} of retention run {ids}: too new to have been pruned", column="received_at_ns", **where)

    def kept_batch(self, row: BatchRow, leaf: TreeLeaf | None, where: dict[str, Any], *, pruned: bool) -> None:
        b = row.batch
        if leaf is not None:
            if batch_leaf_hash(b.canonical, b.signature) != leaf.leaf_hash:
                self.fail("tree.batch_changed", "batches", f"is not the batch signed as tree leaf {leaf.leaf_index}: "
                          "changed or swapped", **where)
        elif not pruned:
            self.unsigned(row)
        if not b.canonical:
            # Retention blanks the signed bytes only together with pruned_at_ns; this is erasure.
            self.fail("batch.blanked", "batches", "the signed bytes are blank but no retention run pruned the batch "
                      "(pruned_at_ns is not set): erased", column="canonical", **where)
            self.link(_Link(row.row_id, b.epoch, b.first_seq, b.last_seq, b.batch_hash, b.prev_hash))
            return
        digest = hashlib.sha256(b.canonical).digest()
        parsed = _decode(row)
        if parsed is None:
            self.fail("batch.canonical", "batches", "the stored canonical bytes do not decode as a signed batch", column="canonical", **where)
            self.res.unlinked_batches.add(row.row_id)
            return
        if chain.canonical_bytes(parsed) != b.canonical:
            self.fail("batch.canonical", "batches", "the stored canonical bytes are not in canonical form", column="canonical", **where)
        n = len(parsed.events)
        signed = dict(agent_id=parsed.agent_id, epoch=parsed.epoch, first_seq=parsed.first_seq,
                      last_seq=parsed.first_seq + n - 1, prev_hash=bytes(parsed.prev_batch_hash), batch_hash=digest)
        for column, value in signed.items():
            stored = getattr(b, column)
            if stored != value:
                self.fail("batch.column", "batches", f"stored {_shown(stored)}, the signed bytes say {_shown(value)}",
                          column=column, **where)
        where = dict(where, agent_id=parsed.agent_id, epoch=parsed.epoch, seq=f"{parsed.first_seq}..{parsed.first_seq + n - 1}")
        public_key = self.public_key(parsed.agent_id)
        if public_key is None:
            self.fail("batch.agent", "batches", "signed by an agent that is not enrolled (table agents)", **where)
        else:
            try:
                Ed25519PublicKey.from_public_bytes(public_key).verify(b.signature, b.canonical)
            except (InvalidSignature, ValueError):
                self.fail("batch.signature", "batches", "the signature does not verify under the agent's enrolled key",
                          column="signature", **where)
        try:
            chain.check_shape(parsed)
            decoded = decode_events(parsed, b.canonical[len(chain.DOMAIN):])  # the bytes _decode parsed
        except (chain.MalformedBatch, ValueError) as exc:  # ValueError: NaN in attributes, see tests/fuzz
            self.fail("batch.shape", "batches", f"the signed batch is malformed: {exc}", **where)
            self.res.unlinked_batches.add(row.row_id)
            return
        if parsed.agent_id != b.agent_id:
            # re-attributed (batch.column above): it is in no chain here, and its agent's chain misses it
            self.res.unlinked_batches.add(row.row_id)
            return
        self.link(_Link(row.row_id, parsed.epoch, parsed.first_seq, parsed.first_seq + n - 1, digest,
                        bytes(parsed.prev_batch_hash)))
        self.match(row.row_id, decoded)

    def unsigned(self, row: BatchRow) -> None:
        self.res.unsigned += 1
        low, high = self.res.unsigned_rows or (row.row_id, row.row_id)
        self.res.unsigned_rows = (min(low, row.row_id), max(high, row.row_id))
        if row.row_id < self.ctx.newest_signed_row:
            b = row.batch
            self.res.late.append((row.row_id, b.agent_id, b.epoch, f"{b.first_seq}..{b.last_seq}"))

    # chain ----------------------------------------------------------------------------------
    def link(self, link: _Link) -> None:
        prev = self.prev
        head = None if prev is None else ChainHead(prev.epoch, prev.last_seq, prev.digest)
        try:  # the same rule ingest applies
            chain.check_link(epoch=link.epoch, first_seq=link.first_seq, prev_hash=link.prev, head=head)
        except chain.ChainBroken as exc:
            self.name_broken_link(link, prev, str(exc))
        except TypeError:  # a changed column that is not a number
            self.fail("chain.link", "batches", "the stored epoch or seqs are not numbers", row_id=link.row_id,
                      agent_id=self.res.agent_id, epoch=link.epoch, seq=link.seqs)
        self.prev = link
        if self.last is None or (link.epoch, link.first_seq) >= (self.last.epoch, self.last.first_seq):
            self.last = link

    def name_broken_link(self, link: _Link, prev: _Link | None, why: str) -> None:
        """Names the place and kind of a link ``shoumi.batch.check_link`` refused."""
        where: dict[str, Any] = dict(row_id=link.row_id, agent_id=self.res.agent_id, epoch=link.epoch, seq=link.seqs)
        if prev is None or link.epoch != prev.epoch:
            if link.first_seq != 1:
                self.fail("chain.gap", "batches", f"epoch {link.epoch} starts at seq {link.first_seq}: "
                          f"seq 1..{link.first_seq - 1} are missing (deleted)", **where)
            else:
                self.fail("chain.link", "batches", f"the first batch of an epoch does not name the genesis hash ({why})", **where)
        elif link.first_seq > prev.last_seq + 1:
            self.fail("chain.gap", "batches", f"seq {prev.last_seq + 1}..{link.first_seq - 1} are missing between "
                      f"batch rows {prev.row_id} and {link.row_id} (deleted)", **where)
        elif link.first_seq <= prev.last_seq:
            self.fail("chain.overlap", "batches", f"overlaps batch row {prev.row_id} (seq {prev.seqs})", **where)
        else:
            self.fail("chain.link", "batches", f"names a previous hash that is not the hash of batch row {prev.row_id} "
                      f"(seq {prev.seqs})", **where)

    def check_head(self) -> None:
        agent_id = self.res.agent_id
        head = self.tx.chain_head(agent_id) if isinstance(agent_id, str) else None
        last = self.last
        if last is None:
            if head is not None and self.public_key(agent_id) is not None:
                self.fail("chain.head", "chain_heads", f"names epoch {head.epoch} seq {head.last_seq} but no batch of "
                          "the agent is stored: all deleted", agent_id=agent_id)
            return
        if head is None or (head.epoch, head.last_seq, head.last_hash) != (last.epoch, last.last_seq, last.digest):
            said = "nothing" if head is None else f"epoch {head.epoch} seq {head.last_seq}"
            self.fail("chain.head", "chain_heads", f"names {said}, but the last stored batch is row {last.row_id} "
                      f"(epoch {last.epoch} seq {last.seqs}): batches at the end were deleted, or the head changed",
                      agent_id=agent_id)

    # events ---------------------------------------------------------------------------------
    def match(self, batch_row: int, decoded: list[StoredEvent]) -> None:
        """Compares the batch's signed events with the event rows at their places, field by field."""
        for e in decoded:
            key = (e.epoch, e.seq)
            if self.signed_upto is not None and key <= self.signed_upto[:2]:
                self.fail("batch.duplicate", "batches", f"seq {e.seq} is also in batch row {self.signed_upto[2]}",
                          row_id=batch_row, agent_id=e.agent_id, epoch=e.epoch, seq=str(e.seq))
                continue
            self.signed_upto = (e.epoch, e.seq, batch_row)
            self.drain_before(key)
            nxt = self.events.peek()
            if nxt is None or _key(nxt) != key:
                self.fail("event.missing", "events", f"the event signed in batch row {batch_row} is not stored (deleted)",
                          agent_id=e.agent_id, epoch=e.epoch, seq=str(e.seq))
                continue
            row = self.events.take()
            self.matched = key
            if not _same(e, row):
                want, got = _expected_values(e), _stored_values(row)
                where: dict[str, Any] = dict(row_id=row.row_id, agent_id=str(row.agent_id), epoch=row.epoch, seq=str(row.seq))
                for (column, _attr), w, g in zip(_EVENT_FIELDS, want, got):
                    if w != g:
                        self.fail("event.field", "events", f"stored {g!r}, the signed batch (row {batch_row}) says {w!r}",
                                  column=column, **where)

    def drain_before(self, bound: tuple[int, int] | None) -> None:
        """Every event row before ``bound`` (None: all left) is one no signed batch holds."""
        while (nxt := self.events.peek()) is not None:
            k = _key(nxt)
            if k is not None and bound is not None and k >= bound:
                return
            row = self.events.take()
            self.res.unmatched_events.add(row.row_id)
            why = ("a second row for the same event" if k is not None and k == self.matched
                   else "no signed batch holds this event: inserted or forged")
            self.fail("event.extra", "events", why, row_id=row.row_id, agent_id=str(row.agent_id), epoch=row.epoch,
                      seq=str(row.seq))


# the coordinator -------------------------------------------------------------------------------

class _Verifier:
    """Reads what is global (tree, runs, agents), has each agent walked, then checks row order."""

    def __init__(self, tree_public_key: bytes | None) -> None:
        self.tree_public_key = tree_public_key
        self.report = VerifyReport()
        self.tree_findings: list[Finding] = []
        self.late_findings: list[Finding] = []

    def prepare(self, tx: Transaction) -> tuple[_Context, list[str]]:
        agents = tx.list_agents()
        self.report.agents = len(agents)
        ids = sorted(set(tx.stored_agent_ids()) | {a.agent_id for a in agents}, key=str)
        newest = self.check_tree(tx)
        return _Context(tuple(r for r in tx.list_retention_runs() if r.kind == "events"), newest), ids

    # tree -----------------------------------------------------------------------------------
    def check_tree(self, tx: Transaction) -> int:
        """Checks the signed heads over the stored leaves; returns the highest batch row a leaf names."""
        fail = self.tree_findings.append
        heads = list(tx.list_tree_heads())
        self.report.tree_heads = len(heads)
        if heads and self.tree_public_key is None:
            fail(Finding("tree.key", "tree_heads", "no tree-head public key: the head signatures cannot be checked"))
        if self.tree_public_key is not None:
            self.report.tree_key_id = key_id(self.tree_public_key)
        hashes = _LeafHashes()
        count, newest, start, gap = 0, 0, 0, False
        while True:
            page = tx.list_tree_leaves(start=start, limit=_PAGE)
            for leaf in page:
                count += 1
                if isinstance(leaf.batch_row_id, int):
                    newest = max(newest, leaf.batch_row_id)
                if gap:
                    continue
                if leaf.leaf_index != len(hashes):
                    fail(Finding("tree.leaf_gap", "tree_leaves", f"leaf {len(hashes)} is missing (next stored leaf is "
                                 f"{leaf.leaf_index})", row_id=leaf.leaf_index))
                    gap = True
                else:
                    hashes.append(leaf.leaf_hash)
            if len(page) < _PAGE:
                break
            start = page[-1].leaf_index + 1
        self.report.tree_leaves = count
        self.check_heads(heads, hashes)
        after = -1
        while True:
            gone = tx.leaves_without_batch(after_index=after, limit=_PAGE)
            for leaf in gone:
                fail(Finding("tree.batch_missing", "batches", f"the batch signed as tree leaf {leaf.leaf_index} is gone "
                             "(deleted)", row_id=leaf.batch_row_id))
            if len(gone) < _PAGE:
                break
            after = gone[-1].leaf_index
        return newest

    def check_heads(self, heads: Sequence[SignedTreeHead], hashes: Sequence[bytes]) -> None:
        def fail(check: str, detail: str, **where: Any) -> None:
            self.tree_findings.append(Finding(check, "tree_heads", detail, **where))

        builder = TreeBuilder()
        good_size = 0
        previous: SignedTreeHead | None = None
        for head in heads:
            where: dict[str, Any] = dict(row_id=head.tree_size)
            if self.tree_public_key is not None and not tree_head_signature_ok(head, self.tree_public_key):
                fail("tree.head_signature", f"the signature over the head of {head.tree_size} leaves "
                     "does not verify under the collector's tree key", **where)
            if previous is not None and head.timestamp_ns < previous.timestamp_ns:
                fail("tree.head_time", f"signed earlier than the smaller head of {previous.tree_size} leaves", **where)
            if head.tree_size > len(hashes):
                fail("tree.head_root", f"covers {head.tree_size} leaves but only {len(hashes)} are stored "
                     f"(leaves {len(hashes)}..{head.tree_size - 1} deleted)", **where)
                previous = head
                continue
            while builder.size < head.tree_size:
                builder.append(hashes[builder.size])
            if builder.root() != head.root_hash:
                fail("tree.head_root", f"the stored leaves {good_size}..{head.tree_size - 1} do not "
                     f"reproduce the signed root {head.root_hash.hex()}", **where)
            else:
                good_size = head.tree_size
            if previous is not None and previous.tree_size <= len(hashes):
                proof = consistency_proof(hashes, previous.tree_size, head.tree_size)
                if not verify_consistency(previous.tree_size, head.tree_size, previous.root_hash, head.root_hash, proof):
                    fail("tree.consistency", f"not consistent with the signed head of "
                         f"{previous.tree_size} leaves: the log was rewritten between them", **where)
            previous = head
        if heads and len(hashes) > heads[-1].tree_size:
            self.tree_findings.append(Finding(
                "tree.leaf_extra", "tree_leaves", f"{len(hashes) - heads[-1].tree_size} leaves are beyond the last "
                f"signed head of {heads[-1].tree_size}", row_id=heads[-1].tree_size))

    # row order, and the merge ---------------------------------------------------------------
    def finish(self, tx: Transaction, ctx: _Context, results: Sequence[_AgentResult]) -> VerifyReport:
        report = self.report
        unlinked: set[int] = set()
        unmatched: set[int] = set()
        for res in results:
            report.findings.extend(res.findings)
            report.batches += res.batches
            report.events += res.events
            report.pruned_batches += res.pruned_batches
            unlinked |= res.unlinked_batches
            unmatched |= res.unmatched_events
        self.check_batch_order(tx, unlinked)
        self.check_event_order(tx, unmatched)
        report.findings.extend(self.tree_findings)
        self.merge_retention(ctx, results)
        report.audit_rows, audit_findings = audit_chain_findings(tx)
        report.findings.extend(audit_findings)
        return report

    def check_batch_order(self, tx: Transaction, skip: set[int]) -> None:
        """In row order no batch of an agent comes before the one stored just before it (a reorder)."""
        previous: dict[Any, tuple[int, int, int, int]] = {}
        after = 0
        while True:
            page = tx.batch_positions(after_row_id=after, limit=_PAGE)
            for row_id, agent_id, epoch, first, last in page:
                if row_id in skip:
                    continue
                earlier = previous.get(agent_id)
                try:
                    reordered = earlier is not None and (epoch, first) < earlier[1:3]
                except TypeError:  # a changed column that is not a number: named by the chain check
                    reordered = False
                if earlier is not None and reordered:
                    self.report.findings.append(Finding(
                        "chain.order", "batches", f"stored after batch row {earlier[0]} (epoch {earlier[1]} seq "
                        f"{earlier[2]}..{earlier[3]}) although it comes before it: reordered",
                        row_id=row_id, agent_id=agent_id, epoch=epoch, seq=f"{first}..{last}"))
                previous[agent_id] = (row_id, epoch, first, last)
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def check_event_order(self, tx: Transaction, skip: set[int]) -> None:
        """In row order no event of an agent comes before one stored earlier (a reorder)."""
        last_seen: dict[str, tuple[int, int, int]] = {}
        after = 0
        while True:
            page = tx.event_positions(after_row_id=after, limit=_PAGE)
            for row_id, agent_id, epoch, seq in page:
                if row_id in skip:
                    continue
                agent = str(agent_id)
                previous = last_seen.get(agent)
                if previous is not None and (epoch, seq) < previous[:2]:
                    self.report.findings.append(Finding(
                        "event.order", "events", f"stored after events row {previous[2]} (epoch {previous[0]} seq "
                        f"{previous[1]}) although it comes before it: reordered",
                        row_id=row_id, agent_id=agent, epoch=epoch, seq=str(seq)))
                if previous is None or (epoch, seq) > previous[:2]:
                    last_seen[agent] = (epoch, seq, row_id)
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def merge_retention(self, ctx: _Context, results: Sequence[_AgentResult]) -> None:
        report = self.report
        by_time: dict[int, list[RetentionRun]] = defaultdict(list)
        for run in ctx.runs:
            by_time[run.at_ns].append(run)
        marked: dict[int, int] = defaultdict(int)
        used: set[int] = set()
        unsigned, low, high = 0, None, None
        late: list[tuple[int, str, int, str]] = []
        for res in results:
            for at, n in res.marked.items():
                marked[at] += n
            used |= res.used_runs
            unsigned += res.unsigned
            if res.unsigned_rows is not None:
                low = res.unsigned_rows[0] if low is None else min(low, res.unsigned_rows[0])
                high = res.unsigned_rows[1] if high is None else max(high, res.unsigned_rows[1])
            late.extend(res.late)
        for at, n in sorted(marked.items()):
            mine = by_time.get(at, [])
            recorded = sum(r.batches for r in mine)
            if mine and recorded != n:
                ids = ", ".join(f"#{r.id}" for r in mine)
                report.findings.append(Finding(
                    "retention.count", "retention_runs", f"{n} batch(es) are marked pruned at {at}, but retention run "
                    f"{ids} recorded {recorded}", row_id=mine[0].id))
        report.retention_runs = sorted(used)
        if unsigned:
            report.notes.append(f"{unsigned} batch(es) not yet under a signed tree head (rows {low}..{high})")
        for r, agent_id, epoch, seqs in sorted(late):
            report.notes.append(
                f"batch row {r} (agent {agent_id} epoch {epoch} seq {seqs}) is older than signed rows but unsigned: "
                "inserted after signing, or committed late on PostgreSQL; it is covered by the next head")
        if report.pruned_batches:
            events = sum(r.events for r in ctx.runs if r.id in used)
            report.notes.append(
                f"{report.pruned_batches} batch(es) pruned by retention ({events} events deleted by runs "
                f"{', '.join(f'#{r}' for r in sorted(used)) or 'none'}): checked by their kept hashes, chain links and "
                "tree leaves; their contents are gone by design")


def audit_chain_findings(tx: Transaction) -> tuple[int, list[Finding]]:
    """Walks the audit log's hash chain in id order; returns the rows checked and the first break, if any.
    After a retention cut the chain starts at the newest anchor (the last deleted row's id and hash)."""
    cut = tx.latest_audit_anchor()
    prev, last_id, count = (cut.cut_hash, cut.cut_id, cut.rows) if cut else (GENESIS, 0, 0)
    after = last_id
    while True:
        page = tx.audit_rows(after_id=after, limit=_PAGE)
        for row in page:
            count += 1
            if row.prev_hash != prev:
                before = f"row {last_id}" if last_id else "the start of the log"
                return count, [Finding("audit.chain", "audit_log", f"prev_hash does not name the hash of {before}: a row "
                                       "before it was removed, inserted or changed", row_id=row.id, column="prev_hash")]
            try:
                details = json.loads(row.details)
                if not isinstance(details, dict):
                    raise ValueError("not an object")
                expected = audit_row_hash(row.prev_hash, row.at_ns, row.actor, row.action, row.target,
                                          canonical_details(details))
            except (TypeError, ValueError):
                return count, [Finding("audit.row", "audit_log", "details are not a JSON object: changed after writing",
                                       row_id=row.id, column="details")]
            if expected != row.row_hash:
                return count, [Finding("audit.row", "audit_log", "row_hash does not match the row's columns (at_ns, actor, "
                                       "action, target, details): changed after it was written", row_id=row.id)]
            prev, last_id = row.row_hash, row.id
        if len(page) < _PAGE:
            break
        after = page[-1].id
    head = tx.audit_head()
    if (head is None and count) or (head is not None and (head.last_id, head.last_hash, head.count) != (last_id, prev, count)):
        named = "no row" if head is None else f"row {head.last_id} of {head.count}"
        return count, [Finding("audit.head", "audit_head", f"the chain ends at row {last_id} after {count} rows, but the "
                               f"recorded head names {named}: rows at the end were removed", row_id=last_id or None)]
    return count, []


# parallel walks: each worker process opens its own store and walks whole agents ---------------

_worker: tuple[Store, _Context] | None = None


def _start_worker(location: str, ctx: _Context) -> None:
    global _worker
    from collector.storage import open_store

    _worker = (open_store(location), ctx)


def _walk_in_worker(agent_id: str) -> _AgentResult:
    assert _worker is not None
    store, ctx = _worker
    with store.read() as tx:  # one snapshot per agent
        return _AgentWalk(tx, agent_id, ctx).run()


def default_jobs() -> int:
    """How many processes verify walks agents in by default: one per CPU."""
    return os.cpu_count() or 1


def verify_store(store: Store, *, tree_public_key: bytes | None, jobs: int = 1,
                 location: str | Path | None = None) -> VerifyReport:
    """Checks every batch, chain, event, signed tree head and pruning of the store; returns the report.

    With ``jobs`` > 1 and the store's ``location`` (what ``open_store`` takes: a data directory or a
    database URL), agents are walked in ``jobs`` worker processes, each with its own store; the report
    is the same, in the same order, whatever ``jobs`` is. Otherwise everything is read in one
    transaction, one snapshot of the store.
    """
    v = _Verifier(tree_public_key)
    if jobs <= 1 or location is None:
        with store.read() as tx:  # one snapshot of the store, on both databases
            ctx, agent_ids = v.prepare(tx)
            results = [_AgentWalk(tx, a, ctx).run() for a in agent_ids]
            return v.finish(tx, ctx, results)
    with store.read() as tx:
        ctx, agent_ids = v.prepare(tx)
    workers = max(1, min(jobs, len(agent_ids)))
    # fork: the workers start at once and import nothing again; no transaction is open here now
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker,
                             initargs=(str(location), ctx)) as pool:
        results = list(pool.map(_walk_in_worker, agent_ids, chunksize=max(1, len(agent_ids) // (workers * 8))))
    with store.read() as tx:
        return v.finish(tx, ctx, results)
