"""A store with records of every kind at chosen ages, built through the real ingest path and tree signer."""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.alerts.models import Alert
from collector.audit.models import AuditEntry
from collector.cases.models import Attachment, Case, Comment, Handoff, HistoryEntry
from collector.events.models import EventFilter
from collector.ingest.service import IngestService
from collector.notify.models import Notification
from collector.privacy.service import register
from collector.retention.models import LegalHold
from collector.retention.service import DAY_NS, place_hold
from collector.transparency import TreeHeadSigner, tree_public_key
from collector.verify import VerifyReport, verify_store

from tests.collector.evidence_helpers import writers
from tests.conftest import ChainWriter, make_event


def day(d: float) -> int:
    return int(d * DAY_NS)


class Records:
    """Two agents; events, alerts, cases, audit rows and notifications put in at the day asked for."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.now = 0
        self.ingest = IngestService(store, clock=lambda: self.now, max_clock_skew_ns=2**62)
        self.key = Ed25519PrivateKey.generate()
        self.signer = TreeHeadSigner(store, self.key, clock=lambda: self.now)
        self.a, self.b = writers(store, "agt-a", "agt-b")

    def events(self, w: ChainWriter, *, on: float, user: str, n: int = 2) -> list[str]:
        """Ingests one batch of ``n`` events of ``user`` received (and happened) on day ``on``; returns their ids."""
        from shoumi.batch import sign_batch
        from shoumi.v1 import events_pb2

        self.now = day(on)
        batch = events_pb2.EventBatch(agent_id=w.agent_id, epoch=w.epoch, first_seq=w.next_seq,
                                      prev_batch_hash=w.last_hash, created_unix_ns=self.now)
        for i in range(n):
            batch.events.append(make_event(w.next_seq + i, user=user, time_ns=self.now))
        w.last_hash = sign_batch(batch, w.key)
        w.next_seq += n
        self.ingest.ingest(batch)
        return [e.id for e in batch.events]

    def sign(self) -> None:
        assert self.signer.sign_if_grown() is not None

    def alert(self, *, on: float, user: str, evidence: list[str] = (), agent_id: str = "agt-a") -> int:  # type: ignore[assignment]
        with self.store.transaction() as tx:
            a = tx.add_alert(Alert("read_burst", "high", "open", user, agent_id, day(on), day(on), tuple(evidence),
                                   f"{user} read many files", last_event_ns=day(on)))
            if evidence:
                tx.add_evidence(alert_id=a.id, event_ids=list(evidence))
            register(tx=tx, user_name=user, now_ns=day(on))
        return int(a.id or 0)

    def case(self, *, on: float, user: str, alerts: list[int], state: str = "open", updated: float | None = None,
             handoff_on: float | None = None, attachment: bytes | None = None) -> int:
        with self.store.transaction() as tx:
            c = tx.add_case(Case(f"case about {user}", state, user, "sec", day(on), day(updated or on), tuple(alerts),
                                 day(on)))
            cid = int(c.id or 0)
            tx.add_case_history(HistoryEntry(cid, day(on), "sec", "open", None, "open"))
            tx.add_comment(Comment(cid, "sec", day(on), f"looked at {user}"))
            tx.append_audit(AuditEntry(day(on), "sec", "case.open", str(cid), {"user": user}))
            if attachment is not None:
                sha = hashlib.sha256(attachment).hexdigest()
                tx.add_attachment(Attachment(cid, "loss.pdf", sha, len(attachment), "application/pdf", "hr", day(on)),
                                  attachment)
            if handoff_on is not None:
                tx.add_handoff(Handoff(cid, 1, "{}", "hr", day(handoff_on)))
        return cid

    def hold(self, *, on: float, user: str | None = None, agent_id: str | None = None, reason: str = "order 7") -> int:
        with self.store.transaction() as tx:
            h = place_hold(tx=tx, hold=LegalHold(reason, "counsel", day(on), 0, 2**62, user, agent_id))
        return int(h.id or 0)

    def audit(self, *, on: float, n: int = 1) -> None:
        with self.store.transaction() as tx:
            for i in range(n):
                tx.append_audit(AuditEntry(day(on), "ivan", "user.lang", "ivan", {"i": i}))

    def notification(self, *, on: float, source_id: int, status: str = "sent") -> None:
        with self.store.transaction() as tx:
            tx.add_notifications([Notification("wecom", "robot-1", "alert", source_id, source_id, day(on), day(on),
                                               status=status)])

    # reading back ---------------------------------------------------------------------------
    def event_ids(self, user: str | None = None) -> set[str]:
        with self.store.read() as tx:
            return {e.id for e in tx.list_events(EventFilter(user=user), cursor=None, limit=100_000).items}

    def alert_ids(self) -> set[int]:
        with self.store.read() as tx:
            return {a.id for a in tx.list_alerts(cursor=None, limit=10_000).items}

    def case_ids(self) -> set[int]:
        with self.store.read() as tx:
            return {c.id for c in tx.list_cases(cursor=None, limit=10_000).items}

    def verify(self) -> VerifyReport:
        return verify_store(self.store, tree_public_key=tree_public_key(self.key))
