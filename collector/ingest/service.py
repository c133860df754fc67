"""The ingest decision for one batch: verify, store exactly once, detect, acknowledge.

No gRPC here: errors carry a ``status`` (a gRPC status code name) that the server adapter maps.

Theory of operation: a batch is checked for shape, then its signature against the enrolled key,
then whether it is a redelivery (same position, same hash: acknowledge again, store nothing), a
forgery of a stored position (same position, other hash: refuse), or the next link of the chain.
Only then are its events stored, in one transaction that re-checks the chain head. The Ack is
returned after that commit, so an agent deletes nothing that is not durably stored.

Errors::

    IngestError (status, reason)
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

from shoumi import batch as chain
from shoumi.v1 import events_pb2

from collector.domain.detection import ReadBurstRule, merge_finding
from collector.domain.liveness import heard_from
from collector.domain.records import Alert, StoredBatch, StoredEvent
from collector.ingest.codec import decode_events
from collector.storage.base import ChainConflict, Store

__all__ = ["IngestError", "IngestService", "AckValue"]

log = logging.getLogger("shoumi.collector.ingest")

# Refusals that mean someone or something altered, forged or replayed a batch of an enrolled agent.
TAMPER_REASONS = frozenset({"bad_signature", "chain_broken", "conflicting_batch", "identity_mismatch"})


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
    """Verifies and stores batches; one instance serves all streams."""

    def __init__(
        self,
        store: Store,
        *,
        read_burst: ReadBurstRule,
        max_events_per_batch: int = chain.MAX_EVENTS_PER_BATCH,
        max_clock_skew_ns: int = 300 * 1_000_000_000,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.max_clock_skew_ns = max_clock_skew_ns
        self.store = store
        self.read_burst = read_burst
        self.max_events = max_events_per_batch
        self.clock = clock
        self.counters: Counter[str] = Counter()

    def ingest(
        self,
        batch: events_pb2.EventBatch,
        *,
        authenticated_agent: str | None = None,
        certificate_serial: int | None = None,
    ) -> AckValue:
        """Verifies and stores one batch; returns the Ack to send, or raises IngestError.

        ``authenticated_agent`` and ``certificate_serial`` come from the stream's client
        certificate; None only in plaintext development mode.
        """
        try:
            ack, stored, previous = self._ingest(batch, authenticated_agent, certificate_serial)
        except IngestError as exc:
            self.counters[f"rejected.{exc.reason}"] += 1
            log.warning(
                "refused batch agent=%s epoch=%s first_seq=%s: %s (%s)",
                batch.agent_id[:64], batch.epoch, batch.first_seq, exc, exc.reason,
            )
            if exc.reason in TAMPER_REASONS:
                self._tamper_alert(batch.agent_id, exc)
            raise
        if stored:
            self.counters["batches.stored"] += 1
            self.counters["events.stored"] += len(stored)
            heard = heard_from(stored, received_ns=self.clock())
            self.store.update_agent_liveness(
                agent_id=batch.agent_id, liveness=heard.liveness, last_seen_ns=heard.last_seen_ns,
                heartbeat_interval_s=heard.heartbeat_interval_s,
            )
            if previous is not None and previous.epoch != batch.epoch:
                self._epoch_alert(batch.agent_id, previous, batch.epoch)
            skew_ns = batch.created_unix_ns - heard.last_seen_ns
            if abs(skew_ns) > self.max_clock_skew_ns:
                # Refusing would strand the evidence: a sealed batch keeps its time for ever. The
                # collector's receipt time is stored beside every batch; the analyst is told.
                self._raise(rule="agent_clock_skew", severity="medium", agent_id=batch.agent_id, merge=True,
                            summary=(f"agent {batch.agent_id}'s clock is {skew_ns / 1e9:+.0f} s off the collector's "
                                     f"(batch at seq {batch.first_seq}); its event times are its own claim, the "
                                     "collector's receipt times are kept beside them"))
            self._detect_and_mark(stored, ack)
        else:
            self.counters["batches.duplicate"] += 1
            if self.store.detected_upto(batch.agent_id) < (ack.epoch, ack.acked_seq):
                # stored before a crash cut detection short: the resent batch finishes the job
                self._detect_and_mark(decode_events(batch), ack)
        return ack

    def _detect_and_mark(self, events: list[StoredEvent], ack: AckValue) -> None:
        self._detect(events)
        self.store.mark_detected(agent_id=ack.agent_id, epoch=ack.epoch, seq=ack.acked_seq)

    def _raise(self, *, rule: str, severity: str, agent_id: str, summary: str, merge: bool = False) -> None:
        now = self.clock()
        existing = self.store.latest_open_alert(rule=rule, agent_id=agent_id)
        if existing is not None and (merge or existing.summary == summary):
            self.store.update_alert(replace(existing, updated_at_ns=now, summary=summary))  # the same fault again
            return
        self.store.add_alert(Alert(rule=rule, severity=severity, status="open", user="", agent_id=agent_id,
                                   created_at_ns=now, updated_at_ns=now, event_ids=(), summary=summary,
                                   last_event_ns=now))
        self.counters[f"alerts.{rule}"] += 1

    def _tamper_alert(self, agent_id: str, exc: IngestError) -> None:
        if self.store.get_agent(agent_id) is None:
            return  # not one of ours: nothing to attach an alert to (logged and counted above)
        self._raise(rule="agent_tamper", severity="high", agent_id=agent_id,
                    summary=f"batch from agent {agent_id} refused, nothing of it stored: {exc.reason}: {exc}")

    def _epoch_alert(self, agent_id: str, previous: chain.ChainHead, epoch: int) -> None:
        self._raise(rule="agent_epoch_reset", severity="medium", agent_id=agent_id,
                    summary=(f"agent {agent_id} started epoch {epoch} after epoch {previous.epoch} ended at seq "
                             f"{previous.last_seq}: its spool was reset; undelivered events of epoch "
                             f"{previous.epoch} cannot arrive any more"))

    def _ingest(
        self, batch: events_pb2.EventBatch, authenticated_agent: str | None, certificate_serial: int | None
    ) -> tuple[AckValue, list[StoredEvent], chain.ChainHead | None]:
        try:
            chain.check_shape(batch, max_events=self.max_events)
        except chain.MalformedBatch as exc:
            raise IngestError("INVALID_ARGUMENT", exc.reason, str(exc)) from exc
        if authenticated_agent is not None and authenticated_agent != batch.agent_id:
            raise IngestError(
                "PERMISSION_DENIED", "identity_mismatch",
                f"the client certificate belongs to agent {authenticated_agent}, the batch names {batch.agent_id}",
            )
        if certificate_serial is not None:
            status = self.store.certificate_status(serial=certificate_serial)
            if status is None or status[0] != batch.agent_id or status[1]:
                raise IngestError("PERMISSION_DENIED", "revoked_certificate",
                                  f"certificate {certificate_serial:x} is revoked or was not issued to {batch.agent_id}")
        agent = self.store.get_agent(batch.agent_id)
        if agent is None:
            raise IngestError("UNAUTHENTICATED", "unknown_agent", f"unknown agent {batch.agent_id!r}")
        if agent.revoked_at_ns is not None:
            raise IngestError("PERMISSION_DENIED", "revoked_agent", f"agent {agent.agent_id} is revoked")
        try:
            digest = chain.verify_signature(batch, agent.public_key)
        except chain.BadSignature as exc:
            raise IngestError("PERMISSION_DENIED", exc.reason, str(exc)) from exc
        try:
            events = decode_events(batch)
        except chain.MalformedBatch as exc:
            raise IngestError("INVALID_ARGUMENT", exc.reason, str(exc)) from exc
        last_seq = batch.first_seq + len(batch.events) - 1
        ack = AckValue(batch.agent_id, batch.epoch, last_seq, digest)
        for _attempt in range(3):
            stored_hash = self.store.batch_hash_at(
                agent_id=batch.agent_id, epoch=batch.epoch, first_seq=batch.first_seq
            )
            if stored_hash == digest:
                return ack, [], None  # a redelivery after a lost Ack: acknowledge again, store nothing
            if stored_hash is not None:
                raise IngestError(
                    "FAILED_PRECONDITION",
                    "conflicting_batch",
                    f"a different batch is already stored at epoch {batch.epoch} seq {batch.first_seq}",
                )
            head = self.store.chain_head(batch.agent_id)
            try:
                chain.check_continues(batch, head)
            except chain.ChainBroken as exc:
                raise IngestError("FAILED_PRECONDITION", exc.reason, str(exc)) from exc
            record = StoredBatch(
                agent_id=batch.agent_id,
                epoch=batch.epoch,
                first_seq=batch.first_seq,
                last_seq=last_seq,
                batch_hash=digest,
                prev_hash=bytes(batch.prev_batch_hash),
                signature=bytes(batch.signature),
                canonical=chain.canonical_bytes(batch),
                received_at_ns=self.clock(),
            )
            try:
                self.store.store_batch(record, events, expected_head=head)
            except ChainConflict:
                continue  # another stream of the same agent moved the head: look again
            return ack, events, head
        raise IngestError("ABORTED", "contention", "the agent's chain kept moving; retry")

    def _detect(self, stored: list[StoredEvent]) -> None:
        rule = self.read_burst
        spans: dict[str, tuple[int, int]] = {}
        for e in stored:
            if e.kind == rule.kind and e.user:
                lo, hi = spans.get(e.user, (e.time_ns, e.time_ns))
                spans[e.user] = (min(lo, e.time_ns), max(hi, e.time_ns))
        for user, (lo, hi) in spans.items():
            # New reads can make reads up to one window earlier part of a burst, and deciding that
            # needs one more window before them.
            reads = self.store.events_in_window(
                user=user, kind=rule.kind, since_ns=lo - 2 * rule.window_ns, until_ns=hi + rule.window_ns, cap=50_000
            )
            for finding in rule.evaluate(reads):
                if finding.last_ns < lo - rule.window_ns:
                    continue  # a burst the new reads cannot have touched: already recorded
                existing = self.store.latest_open_alert(rule=rule.name, user=user)
                alert = merge_finding(existing, finding, window_ns=rule.window_ns, now_ns=self.clock())
                if alert is existing:
                    continue
                if alert.id is None:
                    alert = self.store.add_alert(alert)
                    self.counters["alerts.raised"] += 1
                    log.info("alert %s raised: %s", alert.id, alert.summary)
                else:
                    self.store.update_alert(alert)
