"""Ingest of one batch as one unit of work: verify, store exactly once, acknowledge.

No gRPC here: refusals carry a ``status`` (a gRPC status code name) that the server adapter maps.
What to do with a batch is decided by ``admission.admit`` from values; this module gathers them
(the signature is checked with the agent's enrolled key outside the transaction, keys are cached:
an agent's key never changes) and carries the decision out in one transaction, together with the
agent's liveness and any alert. The Ack is returned after that commit, so an agent deletes nothing
that is not durably stored. Detection runs later, over the stored stream (collector/detection).

Group commit: batches offered by all streams at once are stored by a committer thread in one
transaction (up to ``max_group``), so one fsync covers many agents' batches. On a database server
several committers (``committers``) each hold a connection and store groups at the same time: an
agent's batches always go to the same one (by a hash of its id), so a stream's order holds and two
committers never touch one agent's chain. SQLite has one writer: one committer. A refused batch is
decided before anything of it is written and fails alone; a chain conflict (another collector
moved a head) undoes the group, whose batches are then tried one transaction each.

Errors::

    IngestError (status, reason)      refused: nothing stored
    StoreUnavailable (storage)        not now: nothing stored, the agent retries
"""

from __future__ import annotations

import hashlib
import logging
import zlib
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shoumi import batch as chain
from shoumi.v1 import events_pb2

from collector.alerts.service import raise_alert
from collector.events.models import StoredBatch, StoredEvent
from collector.fleet import service as fleet
from collector.fleet.liveness import heard_from
from collector.ingest.admission import TAMPER_REASONS, Known, Offered, Redelivered, Refuse, admit
from collector.ingest.codec import decode_events
from collector.ingest.gate import WriteGate
from collector.policy.delivery import PolicyDelivery
from collector.storage.base import ChainConflict, Store, StoreError, StoreUnavailable, Transaction

__all__ = ["IngestError", "IngestService", "AckValue", "StreamState"]

log = logging.getLogger("shoumi.collector.ingest")

# Refusals that say nothing about the agent: it retries, or it was revoked on purpose.
_NOT_ALERTED = frozenset({"contention", "revoked_certificate", "revoked_agent", "unknown_agent", "after_refusal"})


class IngestError(Exception):
    """A batch that was refused; nothing of it was stored."""

    def __init__(self, status: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class AckValue:
    """What the collector acknowledges: everything up to acked_seq of the epoch is stored."""

    agent_id: str
    epoch: int
    acked_seq: int
    batch_hash: bytes


class StreamState:
    """One agent stream as the committer sees it: once a batch of it is refused, the batches the stream
    sent after it are answered ABORTED unlooked-at (they follow a batch that is not stored; the agent
    resends them after it), not refused again one by one."""

    __slots__ = ("refused",)

    def __init__(self) -> None:
        self.refused = False


@dataclass
class _Offer:
    """A batch whose signature was checked, waiting for the committer."""

    batch: events_pb2.EventBatch
    offered: Offered
    canonical: bytes
    events: list[StoredEvent] | None  # None: the signature did not verify (refused in the transaction)
    stream_agent: str | None
    stream_serial: int | None
    arrived_ns: int = 0  # when the stream handed it over: clock skew is measured here, not after queueing
    stream: StreamState | None = None
    future: Future[AckValue] = field(default_factory=Future)
    stored: list[StoredEvent] | None = None


@dataclass
class _Refusal:
    """A batch refused before the committer, for the settler to file and answer."""

    future: Future[AckValue]
    error: IngestError
    agent_id: str
    authenticated_agent: str | None
    where: str


class IngestService:
    """Verifies and stores batches; one instance serves all streams, from any thread."""

    def __init__(
        self,
        store: Store,
        *,
        max_events_per_batch: int = chain.MAX_EVENTS_PER_BATCH,
        max_clock_skew_ns: int = 300 * 1_000_000_000,
        clock: Callable[[], int] = time.time_ns,
        max_group: int = 64,
        write_gate: WriteGate | None = None,
        committers: int = 1,
    ) -> None:
        if committers < 1:
            raise ValueError("at least one committer")
        self.store = store
        self.max_events = max_events_per_batch
        self.max_clock_skew_ns = max_clock_skew_ns
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._keys: dict[str, Ed25519PublicKey] = {}
        self.spool_depths: dict[str, int] = {}  # agent id -> events in its spool, as its last heartbeat said
        self.policies: PolicyDelivery | None = None  # pushed policies and agents' reports of them (wiring sets it)
        self.max_group = max_group
        self.write_gate = write_gate or WriteGate(None)  # SQLite: taken in turn with the detection worker
        # one queue per committer; an agent's offers always go to the same one
        self._offers: list[queue.SimpleQueue[_Offer | None]] = [queue.SimpleQueue() for _ in range(committers)]
        self._settles: queue.SimpleQueue[tuple[list[_Offer], list[AckValue | IngestError]] | _Refusal | None] = (
            queue.SimpleQueue())
        self._committers: list[threading.Thread | None] = [None] * committers
        self._settler: threading.Thread | None = None
        self._lock = threading.Lock()

    def ingest(
        self, batch: events_pb2.EventBatch, *, authenticated_agent: str | None = None, certificate_serial: int | None = None
    ) -> AckValue:
        """Verifies and stores one batch; returns the Ack to send, or raises IngestError.

        ``authenticated_agent`` and ``certificate_serial`` come from the stream's client
        certificate; None only in plaintext development mode.
        """
        return self.submit(batch, authenticated_agent=authenticated_agent, certificate_serial=certificate_serial).result()

    def submit(
        self, batch: events_pb2.EventBatch, *, authenticated_agent: str | None = None, certificate_serial: int | None = None,
        stream: StreamState | None = None, raw: bytes | None = None,
    ) -> Future[AckValue]:
        """Checks what needs no store here, then hands the batch to the committer; the future holds
        the Ack, or the IngestError / StoreUnavailable of its refusal. Batches of one ``stream`` are
        committed in the order they were submitted. ``raw``: the bytes ``batch`` was parsed from, if
        the caller has them (its events are then decoded from them, in C where built)."""
        try:
            offer = self._prepare(batch, authenticated_agent, certificate_serial, raw=raw)
            offer.stream = stream
        except IngestError as exc:
            if stream is not None:
                stream.refused = True
            return self.refuse(exc, agent_id=batch.agent_id[:64], authenticated_agent=authenticated_agent,
                               where=f"epoch={batch.epoch} first_seq={batch.first_seq}")
        self._start()
        # by the stream's certificate where there is one: a whole stream, whatever its batches claim, goes
        # to one committer, which takes its batches in the order sent (within a group they are sorted by
        # the agent they name, so batches naming the stream's own agent may be stored before a refusal)
        self._queue_of(authenticated_agent or batch.agent_id).put(offer)
        return offer.future

    def waiting(self) -> int:
        """Batches offered and not yet taken by a committer (all committers' queues)."""
        return sum(q.qsize() for q in self._offers)

    def _queue_of(self, agent_id: str) -> queue.SimpleQueue[_Offer | None]:
        offers = self._offers
        return offers[0] if len(offers) == 1 else offers[zlib.crc32(agent_id.encode()) % len(offers)]

    def refuse(self, exc: IngestError, *, agent_id: str, authenticated_agent: str | None, where: str = "") -> Future[AckValue]:
        """A refusal decided before the committer, filed (``refused``) by the settler thread before its
        future fails: the caller never waits for the store here, the agent hears of it after the filing."""
        failed: Future[AckValue] = Future()
        self._start()
        self._settles.put(_Refusal(failed, exc, agent_id, authenticated_agent, where))
        return failed

    def has_key(self, agent_id: str) -> bool:
        """Whether the agent's public key is cached (submit then needs no store read before the committer)."""
        return agent_id in self._keys

    def _start(self) -> None:
        with self._lock:
            for i, committer in enumerate(self._committers):
                if committer is None or not committer.is_alive():
                    name = "ingest-committer" if i == 0 else f"ingest-committer-{i}"
                    committer = self._committers[i] = threading.Thread(
                        target=self._commit_loop, args=(self._offers[i],), name=name, daemon=True)
                    committer.start()
            if self._settler is None or not self._settler.is_alive():
                self._settler = threading.Thread(target=self._settle_loop, name="ingest-settler", daemon=True)
                self._settler.start()

    def close(self) -> None:
        """Stores what was offered, then stops the committer (and answers what it stored)."""
        with self._lock:
            committers, self._committers = self._committers, [None] * len(self._committers)
            settler, self._settler = self._settler, None
        for offers, committer in zip(self._offers, committers):
            if committer is not None:
                offers.put(None)
        for committer in committers:
            if committer is not None:
                committer.join(30)
        if settler is not None:
            self._settles.put(None)
            settler.join(30)

    def refused(self, exc: IngestError, *, agent_id: str, authenticated_agent: str | None, where: str = "") -> None:
        """Counts a refusal and files it, grouped by agent and reason, against the certificate's agent."""
        self.counters[f"rejected.{exc.reason}"] += 1
        log.warning("refused batch agent=%s %s: %s (%s)", agent_id, where, exc, exc.reason)
        if exc.reason in _NOT_ALERTED:
            return
        # A batch naming agent B sent on agent A's certificate is A's doing: file it against A.
        culprit = authenticated_agent or agent_id
        rule = "agent_tamper" if exc.reason in TAMPER_REASONS else "agent_malformed"
        now = self.clock()
        with self.store.transaction() as tx:
            if tx.get_agent(culprit) is None:
                return  # not one of ours: nothing to attach an alert to (logged and counted above)
            alert = raise_alert(
                tx=tx, rule=rule, severity="high" if rule == "agent_tamper" else "medium", agent_id=culprit, now_ns=now,
                group_key=f"{rule}|{culprit}|{exc.reason}",
                summary=f"batch from agent {culprit} refused, nothing of it stored: {exc.reason}: {exc}")
        if alert.occurrences == 1:
            self.counters[f"alerts.{rule}"] += 1

    def _public_key(self, agent_id: str) -> Ed25519PublicKey | None:
        key = self._keys.get(agent_id)
        if key is None:
            with self.store.read() as tx:
                agent = tx.get_agent(agent_id)
            if agent is None:
                return None
            key = Ed25519PublicKey.from_public_bytes(agent.public_key)
            if len(self._keys) > 100_000:
                self._keys.clear()
            self._keys[agent_id] = key
        return key

    def _prepare(self, batch: events_pb2.EventBatch, stream_agent: str | None, stream_serial: int | None, *,
                 raw: bytes | None = None) -> _Offer:
        try:
            chain.check_shape(batch, max_events=self.max_events)
        except chain.MalformedBatch as exc:
            raise IngestError("INVALID_ARGUMENT", exc.reason, str(exc)) from exc
        # a batch on another agent's certificate is refused for identity before any key is looked up
        mismatch = stream_agent is not None and stream_agent != batch.agent_id
        key = None if mismatch else self._public_key(batch.agent_id)
        canonical = chain.canonical_bytes(batch)
        digest = None
        events = None
        if key is not None:
            try:
                key.verify(batch.signature, canonical)
                digest = hashlib.sha256(canonical).digest()
            except InvalidSignature:
                digest = None
        if digest is not None:
            try:
                events = decode_events(batch, raw)
            except chain.MalformedBatch as exc:
                raise IngestError("INVALID_ARGUMENT", exc.reason, str(exc)) from exc
        last_seq = batch.first_seq + len(batch.events) - 1
        offered = Offered(batch.agent_id, batch.epoch, batch.first_seq, last_seq, bytes(batch.prev_batch_hash), digest)
        return _Offer(batch, offered, canonical, events, stream_agent, stream_serial, arrived_ns=self.clock())

    def _commit_loop(self, offers: queue.SimpleQueue[_Offer | None]) -> None:
        while True:
            first = offers.get()
            if first is None:
                return
            group = [first]
            while len(group) < self.max_group:
                try:
                    more = offers.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    offers.put(None)  # stop after this group
                    break
                group.append(more)
            self._commit(group, tries=3 if len(group) == 1 else 1)

    def _commit(self, group: list[_Offer], *, tries: int) -> None:
        """Stores a group of offers in one transaction and settles their futures."""
        # Chain heads are locked in agent order (each agent's batches keep theirs), as detection locks
        # its round's: on PostgreSQL the two cannot deadlock.
        group = sorted(group, key=lambda o: o.batch.agent_id)
        outcomes: list[AckValue | IngestError] = []
        for attempt in range(tries):
            outcomes = []
            try:
                with self.write_gate.held(), self.store.transaction() as tx:
                    for offer in group:
                        try:
                            outcomes.append(self._admit_and_store(tx, offer))
                        except IngestError as exc:
                            if offer.stream is not None:
                                offer.stream.refused = True
                            outcomes.append(exc)
                break
            except ChainConflict:
                if len(group) > 1:  # another collector moved a head: each batch on its own, looked at again
                    for offer in group:
                        self._commit([offer], tries=3)
                    return
                if attempt == tries - 1:
                    outcomes = [IngestError("ABORTED", "contention", "the agent's chain kept moving; retry")]
                    if group[0].stream is not None:
                        group[0].stream.refused = True
            except (StoreError, Exception) as exc:  # nothing of the group was stored
                if len(group) > 1 and not isinstance(exc, StoreUnavailable):
                    # what one agent sent and the store refused must not fail the others: each on its own
                    for offer in group:
                        self._commit([offer], tries=3)
                    return
                if not isinstance(exc, StoreError):
                    log.exception("ingest of %d batches failed", len(group))
                for offer in group:
                    if offer.stream is not None:  # what its stream sent after it cannot be stored either
                        offer.stream.refused = True
                    offer.future.set_exception(exc)
                return
        # Answering wakes the streams' loop once per batch (and may wait for the GIL each time): the
        # settler does it, so that the committer goes on to the next group at once.
        self._settles.put((group, outcomes))

    def _settle_loop(self) -> None:
        while True:
            item = self._settles.get()
            if item is None:
                return
            if isinstance(item, _Refusal):
                self._file(item.error, agent_id=item.agent_id, authenticated_agent=item.authenticated_agent,
                           where=item.where)
                item.future.set_exception(item.error)
                continue
            for offer, outcome in zip(*item):
                if isinstance(outcome, IngestError):
                    b = offer.batch
                    self._file(outcome, agent_id=b.agent_id[:64], authenticated_agent=offer.stream_agent,
                               where=f"epoch={b.epoch} first_seq={b.first_seq}")
                    offer.future.set_exception(outcome)
                    continue
                self._count(offer)
                offer.future.set_result(outcome)

    def _file(self, exc: IngestError, *, agent_id: str, authenticated_agent: str | None, where: str) -> None:
        """Files a refusal before the agent hears of it; one that cannot be filed is still answered."""
        try:
            self.refused(exc, agent_id=agent_id, authenticated_agent=authenticated_agent, where=where)
        except StoreError as err:
            log.warning("could not file the refusal of agent %s: %s", agent_id, err)
        except Exception:  # the answer must go out whatever happened
            log.exception("filing the refusal of agent %s failed", agent_id)

    def _count(self, offer: _Offer) -> None:
        events = offer.stored
        if events is None:
            self.counters["batches.duplicate"] += 1  # a redelivery after a lost Ack: acknowledged again
            return
        self.counters["batches.stored"] += 1
        self.counters["events.stored"] += len(events)
        for e in events:
            if e.kind == "agent.heartbeat":
                depth = e.attributes.get("spool_unsealed", 0), e.attributes.get("spool_unacked_events", 0)
                if all(isinstance(d, (int, float)) for d in depth):
                    self.spool_depths[offer.batch.agent_id] = int(depth[0]) + int(depth[1])

    def _admit_and_store(self, tx: Transaction, offer: _Offer) -> AckValue:
        """Inside the group's transaction: what the store knows, the decision, and if it is to store,
        the batch, the agent's liveness and any alert. Raises IngestError before writing anything."""
        batch, offered, stream_agent, stream_serial = offer.batch, offer.offered, offer.stream_agent, offer.stream_serial
        offer.stored = None
        if offer.stream is not None and offer.stream.refused:
            raise IngestError("ABORTED", "after_refusal", "an earlier batch of this stream was refused; resend from it")
        head = tx.chain_head(batch.agent_id)
        # a batch is stored at (epoch, first_seq) only if the head has reached it: the next batch needs no look
        beyond = head is None or (batch.epoch, batch.first_seq) > (head.epoch, head.last_seq)
        known = Known(
            agent=tx.get_agent(batch.agent_id),
            certificate=None if stream_serial is None else tx.certificate_status(serial=stream_serial),
            stored_hash=None if beyond else tx.batch_hash_at(agent_id=batch.agent_id, epoch=batch.epoch,
                                                             first_seq=batch.first_seq),
            head=head,
        )
        decision = admit(offered, known, stream_agent=stream_agent, stream_serial=stream_serial)
        if isinstance(decision, Refuse):
            raise IngestError(decision.status, decision.reason, decision.message)
        assert offered.digest is not None and known.agent is not None
        ack = AckValue(batch.agent_id, batch.epoch, offered.last_seq, offered.digest)
        if isinstance(decision, Redelivered):
            return ack
        events = offer.events
        assert events is not None  # decoded when the signature verified
        received = self.clock()
        tx.store_batch(StoredBatch(batch.agent_id, batch.epoch, batch.first_seq, offered.last_seq, offered.digest,
                                   offered.prev_hash, bytes(batch.signature), offer.canonical, received),
                       events, expected_head=decision.head)
        fleet.record_heard(tx=tx, agent=known.agent, heard=heard_from(events, received_ns=received))
        fleet.record_health(tx=tx, agent=known.agent, events=events, received_ns=received,
                            skew_ns=batch.created_unix_ns - (offer.arrived_ns or received))  # heartbeats only
        if self.policies is not None:  # policy.applied / policy.refused / heartbeats naming another policy
            self.policies.observe(tx, batch.agent_id, events)
        if known.head is not None and known.head.epoch != batch.epoch:
            raise_alert(tx=tx, rule="agent_epoch_reset", severity="medium", agent_id=batch.agent_id, now_ns=received,
                        summary=(f"agent {batch.agent_id} started epoch {batch.epoch} after epoch "
                                 f"{known.head.epoch} ended at seq {known.head.last_seq}: its spool was reset; "
                                 f"undelivered events of epoch {known.head.epoch} cannot arrive any more"))
        skew_ns = batch.created_unix_ns - (offer.arrived_ns or received)
        if abs(skew_ns) > self.max_clock_skew_ns:
            # Refusing would strand the evidence: a sealed batch keeps its time for ever. The
            # collector's receipt time is stored beside every batch; the analyst is told.
            raise_alert(tx=tx, rule="agent_clock_skew", severity="medium", agent_id=batch.agent_id, now_ns=received,
                        group_key=f"agent_clock_skew|{batch.agent_id}",
                        summary=(f"agent {batch.agent_id}'s clock is {skew_ns / 1e9:+.0f} s off the collector's "
                                 f"(batch at seq {batch.first_seq}); its event times are its own claim, the "
                                 "collector's receipt times are kept beside them"))
        offer.stored = events
        return ack
