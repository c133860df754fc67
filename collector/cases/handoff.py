"""The payroll outbox's worker and the bridge's HTTP client: a confirmed case reaches payroll exactly once.

Theory of operation. The step to ``sent_to_payroll`` writes an outbox row in the case's own
transaction, with the bridge's document frozen in it (collector/cases/service.py). This worker leases
due rows (a lease, so two collectors on one database do not both send), POSTs the frozen bytes to the
bridge's intake with the collector's own credential, and records the answer:

    201 / 200 (already filed)  -> accepted; then GET /cases/{id} for the schedule, read again later
    422 / 413                  -> refused with the bridge's reasons: HR corrects, then a NEW hand-off
    anything else, no answer   -> still pending: retried with exponential back-off, never dropped

A crash after the bridge filed the case but before the answer was recorded leaves the row pending;
the resend carries the same case id and the identical bytes, which the bridge recognises and answers
as a duplicate (docs/payroll.md: "the identical payload again is accepted as a duplicate"), and a
different document under a filed case id is refused (``CASE_ID_TAKEN``): nothing is filed twice.
The credential is read once from a file and never logged or stored with the rows.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote

import httpx

from collector.cases.models import Handoff, HandoffState, HANDOFF_TRANSITIONS, HistoryEntry
from collector.cases.service import bridge_case_id
from collector.settings import CasesSettings
from collector.storage.base import Store, StoreUnavailable

__all__ = ["BridgeAnswer", "BridgeUnreachable", "PayrollClient", "HandoffWorker", "read_token", "build_handoff_worker"]

log = logging.getLogger("shoumi.collector.payroll")
_ACTOR = "system:payroll-handoff"


class BridgeUnreachable(Exception):
    """No usable answer from the bridge (down, timed out, 5xx, credential refused): try again later."""


@dataclass(frozen=True)
class BridgeAnswer:
    """What the bridge said: its HTTP status and its JSON body."""

    status: int
    body: dict[str, Any]


def read_token(path: Path) -> str:
    """Reads the collector's bridge credential (``spc_...``) from its file."""
    if path.stat().st_mode & 0o077:
        log.warning("the payroll credential file %s can be read by others: chmod 600 it", path)
    token = path.read_text(encoding="utf-8").strip()
    if not token or any(ch.isspace() for ch in token):
        raise ValueError(f"{path} does not hold one credential")
    return token


class PayrollClient:
    """The bridge's intake over HTTP, with the collector's own bearer credential."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport,
                                  headers={"Authorization": f"Bearer {token}"})

    def _call(self, method: str, path: str, content: bytes | None = None) -> BridgeAnswer:
        try:
            reply = self._http.request(method, path, content=content,
                                       headers={"Content-Type": "application/json"} if content else None)
        except httpx.HTTPError as exc:
            raise BridgeUnreachable(f"payroll bridge unreachable ({type(exc).__name__})") from exc
        try:
            body = reply.json()
        except ValueError:
            body = {"detail": reply.text[:500]}
        return BridgeAnswer(reply.status_code, body if isinstance(body, dict) else {"detail": str(body)[:500]})

    def file(self, payload: str) -> BridgeAnswer:
        """POSTs a case document to the intake."""
        answer = self._call("POST", "/cases", payload.encode("utf-8"))
        if answer.status in (200, 201, 413, 422):
            return answer
        if answer.status == 401:
            raise BridgeUnreachable("the payroll bridge refused the collector's credential (401): check the token file")
        raise BridgeUnreachable(f"the payroll bridge answered {answer.status}")

    def schedule(self, case_id: str) -> dict[str, Any]:
        """GETs a filed case with its lines and balance."""
        answer = self._call("GET", f"/cases/{quote(case_id, safe='')}")
        if answer.status != 200:
            raise BridgeUnreachable(f"the payroll bridge answered {answer.status} for the schedule")
        return answer.body

    def serve_notice(self, case_id: str, notice_id: str, proof: Mapping[str, Any]) -> BridgeAnswer:
        """POSTs a notice's proof of service (collector/wecom) to the bridge's written-notice gate.

        ``case_id`` is the collector's; 200 served, 404/409/422 refused with the bridge's reason."""
        path = (f"/cases/{quote(bridge_case_id(int(case_id)), safe='')}/notices/{quote(notice_id, safe='')}"
                "/service")
        answer = self._call("POST", path, json.dumps(dict(proof), sort_keys=True).encode("utf-8"))
        if answer.status in (200, 404, 409, 413, 422):
            return answer
        if answer.status == 401:
            raise BridgeUnreachable("the payroll bridge refused the collector's credential (401): check the token file")
        raise BridgeUnreachable(f"the payroll bridge answered {answer.status}")

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()


class HandoffWorker:
    """Delivers due outbox rows and reads schedules back; ``run_once`` is one pass (the Periodic job)."""

    def __init__(self, store: Store, client: PayrollClient, *, backoff_s: float = 2.0, backoff_max_s: float = 300.0,
                 lease_s: float = 60.0, schedule_refresh_s: float = 600.0, clock: Callable[[], int] = time.time_ns,
                 batch: int = 20) -> None:
        self.store, self.client, self.clock = store, client, clock
        self.backoff_ns, self.backoff_max_ns = int(backoff_s * 1e9), int(backoff_max_s * 1e9)
        self.lease_ns, self.refresh_ns, self.batch = int(lease_s * 1e9), int(schedule_refresh_s * 1e9), batch

    def backoff(self, attempts: int) -> int:
        """How long to wait after the ``attempts``-th failed attempt."""
        return int(min(self.backoff_max_ns, self.backoff_ns * 2 ** max(0, min(attempts - 1, 30))))

    def run_once(self) -> int:
        """Handles every row due now; returns how many."""
        try:
            with self.store.transaction() as tx:
                due = list(tx.claim_handoffs(now_ns=self.clock(), lease_ns=self.lease_ns, limit=self.batch))
        except StoreUnavailable:
            return 0
        for h in due:
            self._handle(h)
        return len(due)

    def _handle(self, h: Handoff) -> None:
        if h.state == HandoffState.PENDING.value:
            done = self._deliver(h)
        else:
            done = self._read_schedule(h)
        if done.state == HandoffState.ACCEPTED.value and h.state == HandoffState.PENDING.value:
            done = self._read_schedule(done)
        self._save(h, done)

    def _deliver(self, h: Handoff) -> Handoff:
        now = self.clock()
        try:
            answer = self.client.file(h.payload)
        except BridgeUnreachable as exc:
            log.warning("hand-off %s of case %s not delivered (attempt %d): %s", h.number, h.case_id, h.attempts, exc)
            return replace(h, last_error=str(exc), next_attempt_ns=now + self.backoff(h.attempts), lease_until_ns=0)
        accepted = answer.status in (200, 201) and answer.body.get("status") == "accepted"
        state = HandoffState.ACCEPTED if accepted else HandoffState.REFUSED
        return replace(h, state=state.value, answer={"http_status": answer.status, **answer.body}, answered_at_ns=now,
                       last_error=None, next_attempt_ns=0, lease_until_ns=0)

    def _read_schedule(self, h: Handoff) -> Handoff:
        now = self.clock()
        try:
            found = self.client.schedule(bridge_case_id(h.case_id))
        except BridgeUnreachable as exc:
            return replace(h, last_error=f"schedule not read: {exc}", next_attempt_ns=now + self.backoff(h.attempts + 1),
                           lease_until_ns=0)
        raw = found.get("lines")
        lines: list[Any] = raw if isinstance(raw, list) else []
        settled = found.get("remaining_fen") == 0 and all(
            isinstance(x, dict) and x.get("state") == "exported" for x in lines)
        # a schedule the bridge has fully exported changes no more: it is not read again unless asked
        return replace(h, schedule=found, schedule_at_ns=now, last_error=None,
                       next_attempt_ns=0 if settled else now + self.refresh_ns, lease_until_ns=0)

    def _save(self, before: Handoff, after: Handoff) -> None:
        if HandoffState(after.state) not in HANDOFF_TRANSITIONS[HandoffState(before.state)]:
            raise AssertionError(f"hand-off {before.key} cannot go from {before.state} to {after.state}")
        try:
            with self.store.transaction() as tx:
                tx.save_handoff(after)
                if after.state != before.state:
                    raw = after.answer.get("refusals")
                    codes = [str(r.get("code"))[:64] for r in (raw if isinstance(raw, list) else []) if isinstance(r, dict)]
                    tx.add_case_history(HistoryEntry(
                        after.case_id, after.answered_at_ns or self.clock(), _ACTOR, f"handoff.{after.state}",
                        before={"handoff": before.number, "state": before.state},
                        after={"handoff": after.number, "state": after.state, "refusals": codes,
                               "duplicate": bool(after.answer.get("duplicate"))}))
        except StoreUnavailable:
            # the answer is lost with the store; the lease runs out and the row is sent again, which the
            # bridge recognises as the same document
            log.warning("hand-off %s of case %s: answer not recorded (store unavailable)", before.number,
                        before.case_id)

    def close(self) -> None:
        """Closes the bridge client's connections (after the background jobs stopped)."""
        self.client.close()

    @staticmethod
    def describe(h: Handoff) -> str:
        """One line for logs (never the payload or the credential)."""
        return json.dumps({"case": h.case_id, "handoff": h.number, "state": h.state, "attempts": h.attempts})


def build_handoff_worker(store: Store, settings: CasesSettings) -> HandoffWorker | None:
    """The outbox worker for these settings, or None (said in the log) when no bridge or credential is set."""
    if settings.payroll_url is None or settings.payroll_token_file is None:
        log.warning("no payroll bridge configured (cases.payroll_url, cases.payroll_token_file): "
                    "cases sent to payroll wait in the outbox")
        return None
    try:
        token = read_token(settings.payroll_token_file)
    except (OSError, ValueError) as exc:
        log.error("the payroll credential file %s cannot be read (%s): cases sent to payroll wait in the outbox",
                  settings.payroll_token_file, type(exc).__name__)
        return None
    client = PayrollClient(settings.payroll_url, token, timeout_s=settings.payroll_timeout_seconds)
    return HandoffWorker(store, client, backoff_s=settings.payroll_backoff_seconds,
                         backoff_max_s=settings.payroll_backoff_max_seconds,
                         schedule_refresh_s=settings.payroll_schedule_refresh_seconds)
