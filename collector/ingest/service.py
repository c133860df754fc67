"""Ingest of one batch as one unit of work: verify, store exactly once, acknowledge.

No gRPC here: refusals carry a ``status`` (a gRPC status code name) that the server adapter maps.
What to do with a batch is decided by ``admission.admit`` from values; this module gathers them
(the signature is checked with the agent's enrolled key outside the transaction, keys are cached:
an agent's key never changes) and carries the decision out in one transaction, together with the
agent's liveness and any alert. The Ack is returned after that commit, so an agent deletes nothing
that is not durably stored. Detection runs later, over the stored stream (collector/detection).

Errors::

    IngestError (status, reason)      refused: nothing stored
    StoreUnavailable (storage)        not now: nothing stored, the agent retries
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
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
from collector.storage.base import ChainConflict, Store, Transaction

__all__ = ["IngestError", "IngestService", "AckValue"]

log = logging.getLogger("shoumi.collector.ingest")

# Refusals that say nothing about the agent: it retries, or it was revoked on purpose.
_NOT_ALERTED = frozenset({"contention", "revoked_certificate", "revoked_agent", "unknown_agent"})


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


class IngestService:
    """Verifies and stores batches; one instance serves all streams, from any thread."""

    def __init__(
        self,
        store: Store,
        *,
        max_events_per_batch: int = chain.MAX_EVENTS_PER_BATCH,
        max_clock_skew_ns: int = 300 * 1_000_000_000,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.max_events = max_events_per_batch
        self.max_clock_skew_ns = max_clock_skew_ns
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._keys: dict[str, Ed25519PublicKey] = {}
        self.spool_depths: dict[str, int] = {}  # agent id -> events in its spool, as its last heartbeat said

    def ingest(
        self, batch: events_pb2.EventBatch, *, authenticated_agent: str | None = None, certificate_serial: int | None = None
    ) -> AckValue:
        """Verifies and stores one batch; returns the Ack to send, or raises IngestError.

        ``authenticated_agent`` and ``certificate_serial`` come from the stream's client
        certificate; None only in plaintext development mode.
        """
        try:
            return self._ingest(batch, authenticated_agent, certificate_serial)
        except IngestError as exc:
            self.refused(exc, agent_id=batch.agent_id[:64], authenticated_agent=authenticated_agent,
                         where=f"epoch={batch.epoch} first_seq={batch.first_seq}")
            raise

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

    def _ingest(self, batch: events_pb2.EventBatch, stream_agent: str | None, stream_serial: int | None) -> AckValue:
        try:
            chain.check_shape(batch, max_events=self.max_events)
        except chain.MalformedBatch as exc:
            raise IngestError("INVALID_ARGUMENT", exc.reason, str(exc)) from exc
        # a batch on another agent's certificate is refused for identity before any key is looked up
        mismatch = stream_agent is not None and stream_agent != batch.agent_id
        key = None if mismatch else self._public_key(batch.agent_id)
        canonical = chain.canonical_bytes(batch)
        digest = None
        if key is not None:
            try:
                key.verify(batch.signature, canonical)
                digest = hashlib.sha256(canonical).digest()
            except InvalidSignature:
                digest = None
        last_seq = batch.first_seq + len(batch.events) - 1
        offered = Offered(batch.agent_id, batch.epoch, batch.first_seq, last_seq, bytes(batch.prev_batch_hash), digest)
        decoded: list[list[StoredEvent]] = []  # decoded once, on the first attempt that stores
        for _attempt in range(3):
            try:
                with self.store.transaction() as tx:
                    ack, events = self._admit_and_store(tx, batch, offered, canonical, stream_agent, stream_serial,
                                                        decoded)
            except ChainConflict:
                continue  # another stream of the same agent moved the head: the transaction is undone, look again
            if events is None:
                self.counters["batches.duplicate"] += 1
                return ack  # a redelivery after a lost Ack: acknowledged again, nothing stored
            self.counters["batches.stored"] += 1
            self.counters["events.stored"] += len(events)
            for e in events:
                if e.kind == "agent.heartbeat":
                    depth = e.attributes.get("spool_unsealed", 0), e.attributes.get("spool_unacked_events", 0)
                    if all(isinstance(d, (int, float)) for d in depth):
                        self.spool_depths[batch.agent_id] = int(depth[0]) + int(depth[1])
            return ack
        raise IngestError("ABORTED", "contention", "the agent's chain kept moving; retry")

    def _admit_and_store(
        self, tx: Transaction, batch: events_pb2.EventBatch, offered: Offered, canonical: bytes,
        stream_agent: str | None, stream_serial: int | None, decoded: list[list[StoredEvent]],
    ) -> tuple[AckValue, list[StoredEvent] | None]:
        """Inside one transaction: what the store knows, the decision, and if it is to store, the batch,
        the agent's liveness and any alert. Returns the Ack and the stored events (None: a redelivery)."""
        known = Known(
            agent=tx.get_agent(batch.agent_id),
            certificate=None if stream_serial is None else tx.certificate_status(serial=stream_serial),
            stored_hash=tx.batch_hash_at(agent_id=batch.agent_id, epoch=batch.epoch, first_seq=batch.first_seq),
            head=tx.chain_head(batch.agent_id),
        )
        decision = admit(offered, known, stream_agent=stream_agent, stream_serial=stream_serial)
        if isinstance(decision, Refuse):
            raise IngestError(decision.status, decision.reason, decision.message)
        assert offered.digest is not None and known.agent is not None
        ack = AckValue(batch.agent_id, batch.epoch, offered.last_seq, offered.digest)
        if isinstance(decision, Redelivered):
            return ack, None
        if not decoded:
            try:
                decoded.append(decode_events(batch))
            except chain.MalformedBatch as exc:
                raise IngestError("INVALID_ARGUMENT", exc.reason, str(exc)) from exc
        events = decoded[0]
        received = self.clock()
        tx.store_batch(StoredBatch(batch.agent_id, batch.epoch, batch.first_seq, offered.last_seq, offered.digest,
                                   offered.prev_hash, bytes(batch.signature), canonical, received),
                       events, expected_head=decision.head)
        fleet.record_heard(tx=tx, agent=known.agent, heard=heard_from(events, received_ns=received))
        if known.head is not None and known.head.epoch != batch.epoch:
            raise_alert(tx=tx, rule="agent_epoch_reset", severity="medium", agent_id=batch.agent_id, now_ns=received,
                        summary=(f"agent {batch.agent_id} started epoch {batch.epoch} after epoch "
                                 f"{known.head.epoch} ended at seq {known.head.last_seq}: its spool was reset; "
                                 f"undelivered events of epoch {known.head.epoch} cannot arrive any more"))
        skew_ns = batch.created_unix_ns - received
        if abs(skew_ns) > self.max_clock_skew_ns:
            # Refusing would strand the evidence: a sealed batch keeps its time for ever. The
            # collector's receipt time is stored beside every batch; the analyst is told.
            raise_alert(tx=tx, rule="agent_clock_skew", severity="medium", agent_id=batch.agent_id, now_ns=received,
                        group_key=f"agent_clock_skew|{batch.agent_id}",
                        summary=(f"agent {batch.agent_id}'s clock is {skew_ns / 1e9:+.0f} s off the collector's "
                                 f"(batch at seq {batch.first_seq}); its event times are its own claim, the "
                                 "collector's receipt times are kept beside them"))
        return ack, events
