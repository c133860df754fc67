"""The shipper: seals spooled events into signed batches and streams them to the collector.

Batches are sealed when ``max_events`` are waiting or ``linger_s`` after the first of them
arrived, so a burst travels in full batches and a single event in well under a second.
One bidirectional gRPC stream at a time, to the first collector of the list that answers (after a
failure the next address is tried). Batches go out in order; Acks come back after the
collector's commit and only then is anything deleted from the spool. On any error the stream is
dropped and rebuilt with exponential backoff and jitter, and every unacknowledged batch is sent
again: the collector recognises a redelivered batch by its position and hash and stores it once.
An Ack that carries a pushed policy (``Ack.policy``) hands it to ``on_policy``, which must return at
once (the runtime queues it for its own thread): the ack loop is never held by applying a policy.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Iterator, Sequence

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.v1 import events_pb2, ingest_pb2_grpc

from agent.spool import Spool

__all__ = ["Shipper"]

log = logging.getLogger("shoumi.agent.transport")


class Shipper:
    """Drains the spool into the collector until stopped."""

    def __init__(
        self,
        spool: Spool,
        key: Ed25519PrivateKey,
        target: str | Sequence[str],
        *,
        max_events: int = 500,
        idle_wait_s: float = 1.0,
        in_flight: int = 16,
        backoff_max_s: float = 30.0,
        linger_s: float = 0.15,
        open_channel: Callable[[str], grpc.Channel] = grpc.insecure_channel,
    ) -> None:
        self.open_channel = open_channel
        self.spool = spool
        self.key = key
        given = target.split(",") if isinstance(target, str) else list(target)
        self.targets = [t.strip() for t in given if t.strip()]
        if not self.targets:
            raise ValueError("at least one collector address is needed")
        self._next_target = 0
        self.max_events = max_events
        self.idle_wait_s = idle_wait_s
        self.in_flight = in_flight
        self.backoff_max_s = backoff_max_s
        self.linger_s = linger_s
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._acked = threading.Condition()
        self._acked_seq = spool.acked_seq()
        self._thread = threading.Thread(target=self._run, name="shipper", daemon=True)
        self.connected = threading.Event()
        self.last_error: str | None = None
        # called with each Ack's pushed policy (a SignedPolicy), from the shipper's thread
        self.on_policy: Callable[[events_pb2.SignedPolicy], None] | None = None

    def start(self) -> None:
        """Starts shipping in the background."""
        self._thread.start()

    def stop(self, *, drain_timeout_s: float = 5.0) -> bool:
        """Seals what is left, waits up to the timeout for it to be acked, and stops.

        Returns whether everything was acknowledged (what was not stays in the spool for the next run).
        """
        deadline = time.monotonic() + drain_timeout_s
        self.wake.set()
        drained = False
        while time.monotonic() < deadline:
            stats = self.spool.stats()
            if stats.unsealed == 0 and stats.unacked_batches == 0:
                drained = True
                break
            with self._acked:
                self._acked.wait(0.05)
        self._stop.set()
        self.wake.set()
        with self._acked:
            self._acked.notify_all()
        self._thread.join(timeout=5)
        return drained

    def _run(self) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            target = self.targets[self._next_target % len(self.targets)]
            channel = self.open_channel(target)
            try:
                stub = ingest_pb2_grpc.IngestServiceStub(channel)
                call = stub.StreamEvents(self._outgoing())
                self.connected.set()
                for ack in call:
                    self.spool.ack(epoch=ack.epoch, acked_seq=ack.acked_seq)
                    with self._acked:
                        self._acked_seq = max(self._acked_seq, ack.acked_seq)
                        self._acked.notify_all()
                    if ack.HasField("policy") and self.on_policy is not None:
                        try:
                            self.on_policy(ack.policy)
                        except Exception:  # a policy problem must never end the stream
                            log.exception("the pushed policy could not be handed over")
                    backoff = 0.25
                    self.last_error = None
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                details = exc.details() if hasattr(exc, "details") else str(exc)
                self.last_error = f"{code}: {details}"
                level = logging.INFO if code == grpc.StatusCode.UNAVAILABLE else logging.ERROR
                log.log(level, "stream to %s ended: %s; retrying in %.1fs", target, self.last_error, backoff)
                self._next_target += 1  # the next attempt goes to the next collector in the list
            finally:
                self.connected.clear()
                channel.close()
            if self._stop.is_set():
                break
            self._stop.wait(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, self.backoff_max_s)

    def _outgoing(self) -> Iterator[events_pb2.EventBatch]:
        sent_upto = self.spool.acked_seq()
        lingered = False
        while not self._stop.is_set():
            with self._acked:
                while sent_upto - self._acked_seq > self.in_flight * self.max_events and not self._stop.is_set():
                    self._acked.wait(0.5)
            # Cleared before looking, so a wake-up that comes while we look is not lost: new events
            # (the recorder wakes us after each commit) and stop() end the wait at once; the timeout
            # only bounds how long an unforeseen miss could delay them.
            self.wake.clear()
            batches = self.spool.pending(after_seq=sent_upto, limit=self.in_flight)
            if batches:
                for batch in batches:
                    yield batch
                    sent_upto = batch.first_seq + len(batch.events) - 1
                continue
            unsealed = self.spool.unsealed_count()
            if 0 < unsealed < self.max_events and not lingered and self.linger_s > 0:
                # Each batch costs the collector a transaction and a signature check: under load,
                # let events gather for a moment; a lone event still leaves within linger_s.
                lingered = True
                self._stop.wait(self.linger_s)
                continue
            lingered = False
            if unsealed and self.spool.seal(key=self.key, max_events=self.max_events) is not None:
                continue
            self.wake.wait(self.idle_wait_s)
