"""Re-verifies a whole collector store and names the exact place of anything changed.

Run as ``shoumi-collector verify --data-dir DIR``. Reads only; never repairs, never signs.

Theory of operation
-------------------
The truth is what the agents signed: each stored batch keeps its canonical bytes and signature.
From those alone the verifier re-derives everything else and compares it with what is stored:

1. **Batches** (table ``batches``): the canonical bytes decode and are canonical, the signature
   verifies under the agent's enrolled key, and the columns (agent, epoch, seqs, prev_hash,
   batch_hash) say what the signed bytes say.
2. **Chains**: per agent, sorted by (epoch, seq), every epoch starts at seq 1 with the genesis hash
   and every batch names the previous one's hash with no gap; in row order no batch comes before
   one it follows (a reorder); ``chain_heads`` names the last batch (a deleted tail).
3. **Events** (table ``events``): exactly the events decoded from the signed batches, field by field,
   none missing, none extra, in chain order per agent.
4. **Tree**: every signed tree head's signature, the root of its first tree_size leaves, consistency
   between successive heads, and that each leaf still is the batch row it was signed as (so a batch
   deleted, swapped or rewritten after signing is named even if the rest agrees).
5. **Retention**: every pruned batch was pruned by a recorded retention run, was received before
   that run's cutoff, and the runs' counts agree with the batches marked pruned.

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

Memory: one small digest per event and one hash per batch, so a store of 10 million events needs a
few GB; the stream order keeps everything else constant.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from shoumi import batch as chain
from shoumi.batch import ChainHead
from shoumi.v1 import events_pb2

from collector.domain.evidence import BatchRow, EventRow, SignedTreeHead, TreeLeaf, batch_leaf_hash, key_id, tree_head_signature_ok
from collector.domain.merkle import TreeBuilder, consistency_proof, verify_consistency
from collector.events.models import StoredEvent
from collector.ingest.codec import decode_events
from collector.retention.models import RetentionRun
from collector.storage.base import Store, Transaction

__all__ = ["Finding", "VerifyReport", "verify_store"]

_PAGE = 2000
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
            f"{self.tree_heads} signed tree heads over {self.tree_leaves} leaves",
        ]
        if self.tree_key_id is not None:
            lines.append(f"tree heads checked under key id {self.tree_key_id.hex()}")
        lines += [f"note: {n}" for n in self.notes]
        for f in self.findings:
            lines.append(f"FAIL {f.check}: {f.where()}: {f.detail}")
        lines.append("OK: the store is intact" if self.ok else f"TAMPERED: {len(self.findings)} finding(s)")
        return "\n".join(lines)


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


def _pages_of_batches(store: Transaction) -> Iterator[BatchRow]:
    after = 0
    while True:
        page = store.batch_leaves(after_row_id=after, limit=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1].row_id


def _pages_of_events(store: Transaction) -> Iterator[EventRow]:
    after = 0
    while True:
        page = store.event_rows(after_row_id=after, limit=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1].row_id


def _all_leaves(store: Transaction) -> list[TreeLeaf]:
    out: list[TreeLeaf] = []
    while True:
        page = store.list_tree_leaves(start=len(out), limit=_PAGE)
        out.extend(page)
        if len(page) < _PAGE:
            return out


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


def _shown(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else repr(value)


def _digest(values: tuple[Any, ...]) -> bytes:
    return hashlib.sha256(repr(values).encode("utf-8", "surrogateescape")).digest()


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


class _Verifier:
    def __init__(self, store: Transaction, tree_public_key: bytes | None) -> None:
        self.store = store
        self.tree_public_key = tree_public_key
        self.report = VerifyReport()
        self.links: dict[str, list[_Link]] = defaultdict(list)
        # row -> (leaf hash, or None for a pruned batch whose signed bytes are gone; agent, epoch, seqs)
        self.leaf_of_row: dict[int, tuple[bytes | None, str, int, str]] = {}
        self.expected: dict[tuple[str, int, int], tuple[int, bytes]] = {}  # event key -> (batch row, digest)
        self.pruned: list[BatchRow] = []
        # (agent, epoch) -> sorted (first_seq, last_seq, row) of its pruned batches: events there must be gone
        self.pruned_ranges: dict[tuple[str, int], list[tuple[int, int, int]]] = defaultdict(list)

    def fail(self, check: str, table: str, detail: str, **where: Any) -> None:
        self.report.findings.append(Finding(check, table, detail, **where))

    # 1. batches ----------------------------------------------------------------------------
    def check_batches(self) -> None:
        agents = {a.agent_id: a for a in self.store.list_agents()}
        self.report.agents = len(agents)
        for row in _pages_of_batches(self.store):
            self.report.batches += 1
            if row.pruned_at_ns is not None:
                self._check_pruned_batch(row, agents)
            else:
                self._check_batch(row, agents)
        for ranges in self.pruned_ranges.values():
            ranges.sort()

    def _check_pruned_batch(self, row: BatchRow, agents: dict[str, Any]) -> None:
        """A batch retention pruned: only its kept columns can be checked, and they are linked."""
        b = row.batch
        seqs = f"{b.first_seq}..{b.last_seq}"
        where: dict[str, Any] = dict(row_id=row.row_id, agent_id=b.agent_id, epoch=b.epoch, seq=seqs)
        self.report.pruned_batches += 1
        self.pruned.append(row)
        if b.canonical:
            self.fail("retention.not_blank", "batches", f"marked pruned (pruned_at_ns {row.pruned_at_ns}) but still "
                      "holds its signed bytes, which retention blanks", column="pruned_at_ns", **where)
            self._check_batch(row, agents)
            return
        if not (isinstance(b.first_seq, int) and isinstance(b.last_seq, int) and 1 <= b.first_seq <= b.last_seq
                and b.last_seq - b.first_seq < chain.MAX_EVENTS_PER_BATCH
                and len(b.batch_hash) == 32 and len(b.prev_hash) == 32):
            self.fail("retention.columns", "batches", "the kept columns of a pruned batch are not those of a batch "
                      "(seqs, or 32-byte batch_hash and prev_hash)", **where)
            return
        if b.agent_id not in agents:
            self.fail("batch.agent", "batches", "pruned batch of an agent that is not enrolled (table agents)", **where)
        self.leaf_of_row[row.row_id] = (None, b.agent_id, b.epoch, seqs)
        self.links[b.agent_id].append(_Link(row.row_id, b.epoch, b.first_seq, b.last_seq, b.batch_hash, b.prev_hash))
        self.pruned_ranges[(b.agent_id, b.epoch)].append((b.first_seq, b.last_seq, row.row_id))

    def _pruned_batch_of(self, agent_id: Any, epoch: Any, seq: Any) -> int | None:
        """The row of the pruned batch that held this event, if any."""
        ranges = self.pruned_ranges.get((agent_id, epoch))
        if not ranges or not isinstance(seq, int):
            return None
        i = bisect.bisect_right(ranges, (seq, float("inf"), 0)) - 1
        if i >= 0 and ranges[i][0] <= seq <= ranges[i][1]:
            return ranges[i][2]
        return None

    def _check_batch(self, row: BatchRow, agents: dict[str, Any]) -> None:
        b = row.batch
        where: dict[str, Any] = dict(row_id=row.row_id, agent_id=b.agent_id, epoch=b.epoch, seq=f"{b.first_seq}..{b.last_seq}")
        if not b.canonical and row.pruned_at_ns is None:
            # Retention blanks the signed bytes only together with pruned_at_ns; this is erasure.
            self.fail("batch.blanked", "batches", "the signed bytes are blank but no retention run pruned the batch "
                      "(pruned_at_ns is not set): erased", column="canonical", **where)
            self.leaf_of_row[row.row_id] = (batch_leaf_hash(b.canonical, b.signature), b.agent_id, b.epoch,
                                            f"{b.first_seq}..{b.last_seq}")
            self.links[b.agent_id].append(_Link(row.row_id, b.epoch, b.first_seq, b.last_seq, b.batch_hash, b.prev_hash))
            return
        digest = hashlib.sha256(b.canonical).digest()
        self.leaf_of_row[row.row_id] = (batch_leaf_hash(b.canonical, b.signature), b.agent_id, b.epoch, f"{b.first_seq}..{b.last_seq}")
        parsed = _decode(row)
        if parsed is None:
            self.fail("batch.canonical", "batches", "the stored canonical bytes do not decode as a signed batch", column="canonical", **where)
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
        where.update(agent_id=parsed.agent_id, epoch=parsed.epoch, seq=f"{parsed.first_seq}..{parsed.first_seq + n - 1}")
        agent = agents.get(parsed.agent_id)
        if agent is None:
            self.fail("batch.agent", "batches", "signed by an agent that is not enrolled (table agents)", **where)
        else:
            try:
                Ed25519PublicKey.from_public_bytes(agent.public_key).verify(b.signature, b.canonical)
            except (InvalidSignature, ValueError):
                self.fail("batch.signature", "batches", "the signature does not verify under the agent's enrolled key",
                          column="signature", **where)
        try:
            chain.check_shape(parsed)
            decoded = decode_events(parsed)
        except (chain.MalformedBatch, ValueError) as exc:  # ValueError: NaN in attributes, see tests/fuzz
            self.fail("batch.shape", "batches", f"the signed batch is malformed: {exc}", **where)
            return
        self.links[parsed.agent_id].append(
            _Link(row.row_id, parsed.epoch, parsed.first_seq, parsed.first_seq + n - 1, digest, bytes(parsed.prev_batch_hash)))
        for e in decoded:
            key = (e.agent_id, e.epoch, e.seq)
            if key in self.expected:
                self.fail("batch.duplicate", "batches", f"seq {e.seq} is also in batch row {self.expected[key][0]}",
                          row_id=row.row_id, agent_id=e.agent_id, epoch=e.epoch, seq=str(e.seq))
            self.expected[key] = (row.row_id, _digest(_expected_values(e)))

    # 2. chains -----------------------------------------------------------------------------
    def check_chains(self) -> None:
        agents_with_heads = set(self.links)
        for agent_id, by_row in sorted(self.links.items()):
            self._check_chain(agent_id, by_row)
        for agent in self.store.list_agents():
            if agent.agent_id not in agents_with_heads and self.store.chain_head(agent.agent_id) is not None:
                head = self.store.chain_head(agent.agent_id)
                assert head is not None
                self.fail("chain.head", "chain_heads", f"names epoch {head.epoch} seq {head.last_seq} but no batch of the agent is stored: all deleted",
                          agent_id=agent.agent_id)

    def _check_chain(self, agent_id: str, by_row: list[_Link]) -> None:
        ordered = sorted(by_row, key=lambda x: (x.epoch, x.first_seq))
        prev: _Link | None = None
        for link in ordered:
            head = None if prev is None else ChainHead(prev.epoch, prev.last_seq, prev.digest)
            try:  # the same rule ingest applies
                chain.check_link(epoch=link.epoch, first_seq=link.first_seq, prev_hash=link.prev, head=head)
            except chain.ChainBroken as exc:
                self._name_broken_link(agent_id, link, prev, str(exc))
            prev = link
        for earlier, later in zip(by_row, by_row[1:]):
            if (later.epoch, later.first_seq) < (earlier.epoch, earlier.first_seq):
                self.fail("chain.order", "batches", f"stored after batch row {earlier.row_id} (epoch {earlier.epoch} seq "
                          f"{earlier.seqs}) although it comes before it: reordered",
                          row_id=later.row_id, agent_id=agent_id, epoch=later.epoch, seq=later.seqs)
        head = self.store.chain_head(agent_id)
        last = ordered[-1]
        if head is None or (head.epoch, head.last_seq, head.last_hash) != (last.epoch, last.last_seq, last.digest):
            said = "nothing" if head is None else f"epoch {head.epoch} seq {head.last_seq}"
            self.fail("chain.head", "chain_heads", f"names {said}, but the last stored batch is row {last.row_id} "
                      f"(epoch {last.epoch} seq {last.seqs}): batches at the end were deleted, or the head changed",
                      agent_id=agent_id)

    def _name_broken_link(self, agent_id: str, link: _Link, prev: _Link | None, why: str) -> None:
        """Names the place and kind of a link ``shoumi.batch.check_link`` refused."""
        where: dict[str, Any] = dict(row_id=link.row_id, agent_id=agent_id, epoch=link.epoch, seq=link.seqs)
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

    # 3. events -----------------------------------------------------------------------------
    def check_events(self) -> None:
        last_seen: dict[str, tuple[int, int, int]] = {}
        seen: set[tuple[str, int, int]] = set()
        for row in _pages_of_events(self.store):
            self.report.events += 1
            key = (row.agent_id, row.epoch, row.seq)
            where: dict[str, Any] = dict(row_id=row.row_id, agent_id=str(row.agent_id), epoch=row.epoch, seq=str(row.seq))
            wanted = self.expected.pop(key, None)
            if wanted is None:
                pruned_row = self._pruned_batch_of(row.agent_id, row.epoch, row.seq)
                if pruned_row is not None:
                    self.fail("retention.event_present", "events", f"batch row {pruned_row} was pruned by retention, "
                              "but this event of it is stored: kept back or re-inserted, and no signature covers it now",
                              **where)
                    continue
                why = "a second row for the same event" if key in seen else "no signed batch holds this event: inserted or forged"
                self.fail("event.extra", "events", why, **where)
                continue
            seen.add(key)
            batch_row, digest = wanted
            if _digest(_stored_values(row)) != digest:
                self._name_changed_fields(row, batch_row, where)
            previous = last_seen.get(str(row.agent_id))
            if previous is not None and (row.epoch, row.seq) < previous[:2]:
                self.fail("event.order", "events", f"stored after events row {previous[2]} (epoch {previous[0]} seq "
                          f"{previous[1]}) although it comes before it: reordered", **where)
            if previous is None or (row.epoch, row.seq) > previous[:2]:
                last_seen[str(row.agent_id)] = (row.epoch, row.seq, row.row_id)
        for (agent_id, epoch, seq), (batch_row, _digest_) in sorted(self.expected.items()):
            self.fail("event.missing", "events", f"the event signed in batch row {batch_row} is not stored (deleted)",
                      agent_id=agent_id, epoch=epoch, seq=str(seq))

    def _name_changed_fields(self, row: EventRow, batch_row: int, where: dict[str, Any]) -> None:
        [stored_batch] = self.store.batch_leaves(after_row_id=batch_row - 1, limit=1)
        parsed = _decode(stored_batch)
        assert parsed is not None  # it decoded a moment ago
        [signed] = [e for e in decode_events(parsed) if e.seq == row.seq]
        for (column, _attr), want, got in zip(_EVENT_FIELDS, _expected_values(signed), _stored_values(row)):
            if want != got:
                self.fail("event.field", "events", f"stored {got!r}, the signed batch (row {batch_row}) says {want!r}",
                          column=column, **where)

    # 4. tree -------------------------------------------------------------------------------
    def check_tree(self) -> None:
        heads = list(self.store.list_tree_heads())
        leaves = _all_leaves(self.store)
        self.report.tree_heads, self.report.tree_leaves = len(heads), len(leaves)
        if heads and self.tree_public_key is None:
            self.fail("tree.key", "tree_heads", "no tree-head public key: the head signatures cannot be checked")
        if self.tree_public_key is not None:
            self.report.tree_key_id = key_id(self.tree_public_key)
        hashes: list[bytes] = []
        for i, leaf in enumerate(leaves):
            if leaf.leaf_index != i:
                self.fail("tree.leaf_gap", "tree_leaves", f"leaf {i} is missing (next stored leaf is {leaf.leaf_index})", row_id=leaf.leaf_index)
                break
            hashes.append(leaf.leaf_hash)
        self._check_heads(heads, hashes)
        self._check_leaves_against_batches(leaves)

    def _check_heads(self, heads: Sequence[SignedTreeHead], hashes: list[bytes]) -> None:
        builder = TreeBuilder()
        good_size = 0
        previous: SignedTreeHead | None = None
        for head in heads:
            where: dict[str, Any] = dict(row_id=head.tree_size)
            if self.tree_public_key is not None and not tree_head_signature_ok(head, self.tree_public_key):
                self.fail("tree.head_signature", "tree_heads", f"the signature over the head of {head.tree_size} leaves "
                          "does not verify under the collector's tree key", **where)
            if previous is not None and head.timestamp_ns < previous.timestamp_ns:
                self.fail("tree.head_time", "tree_heads", f"signed earlier than the smaller head of {previous.tree_size} leaves", **where)
            if head.tree_size > len(hashes):
                self.fail("tree.head_root", "tree_heads", f"covers {head.tree_size} leaves but only {len(hashes)} are stored "
                          f"(leaves {len(hashes)}..{head.tree_size - 1} deleted)", **where)
                previous = head
                continue
            while builder.size < head.tree_size:
                builder.append(hashes[builder.size])
            if builder.root() != head.root_hash:
                self.fail("tree.head_root", "tree_heads", f"the stored leaves {good_size}..{head.tree_size - 1} do not "
                          f"reproduce the signed root {head.root_hash.hex()}", **where)
            else:
                good_size = head.tree_size
            if previous is not None and previous.tree_size <= len(hashes):
                proof = consistency_proof(hashes, previous.tree_size, head.tree_size)
                if not verify_consistency(previous.tree_size, head.tree_size, previous.root_hash, head.root_hash, proof):
                    self.fail("tree.consistency", "tree_heads", f"not consistent with the signed head of "
                              f"{previous.tree_size} leaves: the log was rewritten between them", **where)
            previous = head
        if heads and len(hashes) > heads[-1].tree_size:
            self.fail("tree.leaf_extra", "tree_leaves", f"{len(hashes) - heads[-1].tree_size} leaves are beyond the "
                      f"last signed head of {heads[-1].tree_size}", row_id=heads[-1].tree_size)

    def _check_leaves_against_batches(self, leaves: Sequence[TreeLeaf]) -> None:
        covered: set[int] = set()
        for leaf in leaves:
            covered.add(leaf.batch_row_id)
            stored = self.leaf_of_row.get(leaf.batch_row_id)
            if stored is None:
                self.fail("tree.batch_missing", "batches", f"the batch signed as tree leaf {leaf.leaf_index} is gone (deleted)",
                          row_id=leaf.batch_row_id)
            elif stored[0] is None:
                pass  # pruned: its signed bytes are gone, the stored leaf hash under the signed heads stands for it
            elif stored[0] != leaf.leaf_hash:
                self.fail("tree.batch_changed", "batches", f"is not the batch signed as tree leaf {leaf.leaf_index}: "
                          "changed or swapped", row_id=leaf.batch_row_id, agent_id=stored[1], epoch=stored[2], seq=stored[3])
        newest = max(covered, default=0)
        for row in self.pruned:
            if row.row_id not in covered:
                b = row.batch
                self.fail("retention.unsigned", "batches", "pruned but no tree leaf holds it: nothing signed vouches for "
                          "its kept hashes (retention prunes only batches under a signed tree head)",
                          row_id=row.row_id, agent_id=b.agent_id, epoch=b.epoch, seq=f"{b.first_seq}..{b.last_seq}")
        pruned_rows = {row.row_id for row in self.pruned}
        uncovered = sorted(r for r in self.leaf_of_row if r not in covered and r not in pruned_rows)
        late = [r for r in uncovered if r < newest]
        if uncovered:
            self.report.notes.append(f"{len(uncovered)} batch(es) not yet under a signed tree head (rows {uncovered[0]}..{uncovered[-1]})")
        for r in late:
            _leaf, agent_id, epoch, seqs = self.leaf_of_row[r]
            self.report.notes.append(
                f"batch row {r} (agent {agent_id} epoch {epoch} seq {seqs}) is older than signed rows but unsigned: "
                "inserted after signing, or committed late on PostgreSQL; it is covered by the next head")


    # 5. retention --------------------------------------------------------------------------
    def check_retention(self) -> None:
        runs = list(self.store.list_retention_runs())
        by_time: dict[int, list[RetentionRun]] = defaultdict(list)
        for run in runs:
            by_time[run.at_ns].append(run)
        marked: dict[int, int] = defaultdict(int)
        used: set[int] = set()
        for row in self.pruned:
            b = row.batch
            at = row.pruned_at_ns
            assert at is not None
            marked[at] += 1
            where: dict[str, Any] = dict(row_id=row.row_id, agent_id=b.agent_id, epoch=b.epoch, seq=f"{b.first_seq}..{b.last_seq}")
            mine = by_time.get(at)
            if not mine:
                self.fail("retention.run", "batches", f"marked pruned at {at} but no retention run is recorded then "
                          "(table retention_runs)", column="pruned_at_ns", **where)
                continue
            used.update(r.id for r in mine if r.id is not None)
            cutoff = min(r.before_ns for r in mine)
            if not b.received_at_ns < cutoff:
                ids = ", ".join(f"#{r.id}" for r in mine)
                self.fail("retention.cutoff", "batches", f"received at {b.received_at_ns}, not before the cutoff {cutoff} "
                          f"of retention run {ids}: too new to have been pruned", column="received_at_ns", **where)
        for at, n in sorted(marked.items()):
            mine = by_time.get(at, [])
            recorded = sum(r.batches for r in mine)
            if mine and recorded != n:
                ids = ", ".join(f"#{r.id}" for r in mine)
                self.fail("retention.count", "retention_runs", f"{n} batch(es) are marked pruned at {at}, but retention "
                          f"run {ids} recorded {recorded}", row_id=mine[0].id)
        self.report.retention_runs = sorted(used)
        if self.pruned:
            events = sum(r.events for r in runs if r.id in used)
            self.report.notes.append(
                f"{len(self.pruned)} batch(es) pruned by retention ({events} events deleted by runs "
                f"{', '.join(f'#{r}' for r in sorted(used)) or 'none'}): checked by their kept hashes, chain links and "
                "tree leaves; their contents are gone by design")


def verify_store(store: Store, *, tree_public_key: bytes | None) -> VerifyReport:
    """Checks every batch, chain, event, signed tree head and pruning of the store; returns the report."""
    with store.read() as tx:  # one snapshot of the store, on both databases
        v = _Verifier(tx, tree_public_key)
        v.check_batches()
        v.check_chains()
        v.check_events()
        v.check_tree()
        v.check_retention()
    return v.report
