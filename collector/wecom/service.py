"""Notices to employees: create, deliver (WeCom app message, email as the fallback), read, acknowledge, report.

Theory of operation. HR creates a notice for an employee (the bridge's deduction notice of a case, or the
monitoring notice in force); the channel is chosen then: WeCom when the employee has a WeCom userid
(``employee:<id>`` in ``wecom_userids``), else email to the address HR gives; neither -> 422. The notice is
an outbox row: ``NoticeWorker.run_once`` sends due rows as a textcard whose link opens the full text after
sign-in (``/me/wecom-notices/{key}``). WeCom answering a msgid without listing the userid as invalid is
*delivered*; listing it, or any errcode not worth retrying, is *not delivered* with the reason; WeCom down
or rate limited leaves it *pending* for a later attempt. Nothing else changes the state: the employee
pressing "acknowledge" on the page (signed in as the account linked to the notice's employee) makes it
*acknowledged*, with the time; a verified WeCom callback naming the notice records a read receipt. The
worker then reports an acknowledged deduction notice's proof to the payroll bridge, whose written-notice
gate serves the notice on the acknowledgement's day (docs/wecom.md). Every step is audited in the same
transaction; the audit never holds a secret, only the notice key, channel, msgid and times.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import replace
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Callable, Mapping, Protocol

from collector.audit.models import AuditEntry
from collector.storage.base import AuditArea, Store, StoreUnavailable, WeComArea
from collector.wecom.client import WeComClient, WeComError, WeComRateLimited
from collector.wecom.crypto import CallbackCrypto, CallbackRefused, parse_xml
from collector.wecom.models import (EMAIL, WECOM, EmployeeNotice, NoticeKind, NoticeState, china_iso,
                                    employee_subject, proof_of_service, text_sha256)

__all__ = ["NoticeError", "create_notice", "acknowledge", "mark_opened", "handle_callback", "NoticeWorker",
           "link_userid", "notice_link"]

log = logging.getLogger("shoumi.collector.wecom")
_ACTOR = "system:wecom-notices"
_MAX_TEXT = 100_000


class NoticeError(Exception):
    """A request that cannot be done: an HTTP status and the reason."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class _Tx(WeComArea, AuditArea, Protocol):
    pass


def notice_link(base_url: str, key: str) -> str:
    """Where the employee reads the notice in full (after sign-in)."""
    return f"{base_url.rstrip('/')}/me/wecom-notices/{key}"


def _audit(tx: _Tx, now_ns: int, actor: str, action: str, n: EmployeeNotice, **details: Any) -> None:
    tx.append_audit(AuditEntry(now_ns, actor, action, f"notice:{n.key}", {
        "kind": n.kind, "employee_id": n.employee_id, "case_id": n.case_id, "bridge_notice_id": n.bridge_notice_id,
        "channel": n.channel, **details}))


def link_userid(*, tx: _Tx, subject: str, userid: str | None, actor: str, now_ns: int) -> None:
    """Sets the WeCom userid of an employee (``employee:<id>``) or account (``account:<name>``); audited."""
    if userid is not None and not (0 < len(userid) <= 64 and userid.replace("-", "").replace("_", "")
                                   .replace(".", "").replace("@", "").isalnum()):
        raise NoticeError(422, "a WeCom userid is 1 to 64 letters, digits, '-', '_', '.', '@'")
    tx.put_wecom_userid(subject=subject, userid=userid, actor=actor, now_ns=now_ns)
    tx.append_audit(AuditEntry(now_ns, actor, "wecom.userid.set", subject, {"userid": userid}))


def create_notice(*, tx: _Tx, kind: str, employee_id: str, title: str, text: str, actor: str, now_ns: int,
                  case_id: str | None = None, bridge_notice_id: str | None = None, email: str | None = None,
                  wecom_enabled: bool = True) -> EmployeeNotice:
    """Queues a notice to an employee: WeCom when they have a userid (and WeCom is configured), else email."""
    if kind not in {k.value for k in NoticeKind}:
        raise NoticeError(422, "kind is 'deduction' or 'monitoring'")
    employee_id, title = employee_id.strip(), title.strip()
    if not employee_id or len(employee_id) > 64:
        raise NoticeError(422, "employee_id is 1 to 64 characters")
    if not title or len(title) > 200:
        raise NoticeError(422, "title is 1 to 200 characters")
    if not text.strip() or len(text) > _MAX_TEXT:
        raise NoticeError(422, f"text is 1 to {_MAX_TEXT} characters")
    if kind == NoticeKind.DEDUCTION.value and (not case_id or not bridge_notice_id):
        raise NoticeError(422, "a deduction notice names its case and the bridge's notice id (N-...)")
    userid = tx.get_wecom_userid(employee_subject(employee_id))
    if userid is not None and wecom_enabled:
        channel, address = WECOM, userid
    elif email:
        if "@" not in email or len(email) > 254 or any(c in email for c in " \r\n,;<>"):
            raise NoticeError(422, "email is one address")
        channel, address = EMAIL, email.strip()
    else:
        raise NoticeError(422, f"employee {employee_id} has no WeCom userid"
                          + ("" if wecom_enabled else " (or WeCom is not configured)") + ": give an email address")
    n = EmployeeNotice(secrets.token_urlsafe(18), kind, employee_id, title, text, text_sha256(text), actor, now_ns,
                       case_id=case_id, bridge_notice_id=bridge_notice_id, channel=channel, address=address)
    tx.add_employee_notice(n)
    _audit(tx, now_ns, actor, "wecom.notice.created", n, text_sha256=n.text_sha256)
    return n


def _own(tx: Any, n: EmployeeNotice | None, account: str) -> EmployeeNotice:
    """The notice, if it is addressed to the employee this account is linked to (else 404: no probing)."""
    employee = tx.agreement_employee_for_account(account)
    if n is None or employee is None or employee.employee_id != n.employee_id:
        raise NoticeError(404, "no such notice for you")
    return n


def mark_opened(*, tx: Any, key: str, account: str, now_ns: int) -> EmployeeNotice:
    """The employee opened the notice's page: the first time is recorded."""
    n = _own(tx, tx.get_employee_notice(key), account)
    if n.opened_at_ns is None:
        n = replace(n, opened_at_ns=now_ns)
        tx.save_employee_notice(n)
        _audit(tx, now_ns, f"user:{account}", "wecom.notice.opened", n)
    return n


def acknowledge(*, tx: Any, key: str, account: str, shown_sha256: str, now_ns: int) -> EmployeeNotice:
    """The employee read the full text and acknowledged it: the proof of service is complete."""
    n = _own(tx, tx.get_employee_notice(key), account)
    if shown_sha256 != n.text_sha256:
        raise NoticeError(409, "the text changed since it was shown: read it again")
    if n.state == NoticeState.ACKNOWLEDGED.value:
        return n
    if n.delivered_at_ns is None:
        # the link reached the employee some other way before the delivery was recorded: delivery is now
        n = replace(n, delivered_at_ns=now_ns)
    n = replace(n, state=NoticeState.ACKNOWLEDGED.value, acknowledged_at_ns=now_ns, acknowledged_by=account,
                opened_at_ns=n.opened_at_ns or now_ns, next_attempt_ns=0)
    tx.save_employee_notice(n)
    _audit(tx, now_ns, f"user:{account}", "wecom.notice.acknowledged", n,
           acknowledged_at=china_iso(now_ns), text_sha256=n.text_sha256)
    return n


def handle_callback(*, store: Store, crypto: CallbackCrypto, params: Mapping[str, str], body: bytes,
                    now_ns: int) -> str:
    """A POST to the callback URL: verified and decrypted, then a read receipt recorded if it names a notice.

    Refused (CallbackRefused, audited) when it does not verify. Returns what to answer WeCom ("success")."""
    try:
        outer = parse_xml(body)
        encrypted = outer.get("Encrypt", "")
        if not encrypted:
            raise CallbackRefused("no Encrypt element")
        inner = parse_xml(crypto.decrypt(params.get("msg_signature", ""), params.get("timestamp", ""),
                                         params.get("nonce", ""), encrypted, now=now_ns / 1e9))
    except CallbackRefused as exc:
        _refused(store, now_ns, exc.reason)
        raise
    event = inner.get("Event", "")
    key = inner.get("TaskId") or inner.get("EventKey") or ""
    msgid = inner.get("MsgId") or inner.get("MsgID") or ""
    sender = inner.get("FromUserName", "")
    with store.transaction() as tx:
        n = tx.get_employee_notice(key) if key else None
        if n is None and msgid:
            n = tx.employee_notice_by_msgid(msgid)
        if n is None or n.channel != WECOM:
            return "success"  # an event about something else (enter_agent, a menu): nothing to record
        if sender != n.address:
            tx.append_audit(AuditEntry(now_ns, _ACTOR, "wecom.callback.mismatch", f"notice:{n.key}",
                                       {"event": event[:64], "from": sender[:64]}))
            return "success"
        if n.read_at_ns is None:
            n = replace(n, read_at_ns=now_ns)
            tx.save_employee_notice(n)
            _audit(tx, now_ns, f"wecom:{sender}", "wecom.notice.read", n, event=event[:64], msgid=n.msgid)
    return "success"


def _refused(store: Store, now_ns: int, reason: str) -> None:
    log.warning("a WeCom callback was refused: %s", reason)
    try:
        with store.transaction() as tx:
            tx.append_audit(AuditEntry(now_ns, "anonymous", "wecom.callback.refused", "wecom:callback",
                                       {"reason": reason}))
    except StoreUnavailable:
        pass


class _Mailer(Protocol):
    def send_message(self, msg: EmailMessage) -> Any: ...


class _Bridge(Protocol):
    def serve_notice(self, case_id: str, notice_id: str, proof: Mapping[str, Any]) -> Any: ...


class NoticeWorker:
    """The notices' outbox: delivers due notices and reports proofs of service; ``run_once`` is one pass."""

    def __init__(self, store: Store, *, wecom: WeComClient | None, agent_id: int | None, base_url: str,
                 mailer: _Mailer | None = None, mail_from: str = "shoumi@localhost", bridge: _Bridge | None = None,
                 retry_s: float = 60.0, retry_max_s: float = 3600.0, wecom_problem: str | None = None,
                 clock: Callable[[], int] = time.time_ns, batch: int = 20) -> None:
        self.store, self.wecom, self.agent_id, self.base_url = store, wecom, agent_id, base_url
        self.mailer, self.mail_from, self.bridge, self.clock, self.batch = mailer, mail_from, bridge, clock, batch
        self.retry_ns, self.retry_max_ns = int(retry_s * 1e9), int(retry_max_s * 1e9)
        self.wecom_problem = wecom_problem  # why WeCom is off (said on every pending notice)

    def _later(self, attempts: int) -> int:
        return self.clock() + int(min(self.retry_max_ns, self.retry_ns * 2 ** max(0, min(attempts - 1, 20))))

    def run_once(self) -> int:
        """Handles every due notice; returns how many."""
        try:
            with self.store.read() as tx:
                due = list(tx.due_employee_notices(now_ns=self.clock(), limit=self.batch))
        except StoreUnavailable:
            return 0
        for n in due:
            if n.state == NoticeState.PENDING.value:
                self._save(n, self._deliver(n))
            else:
                self._save(n, self._report(n))
        return len(due)

    # --- delivery ------------------------------------------------------------------------------------
    def _deliver(self, n: EmployeeNotice) -> EmployeeNotice:
        n = replace(n, attempts=n.attempts + 1)
        if n.channel == WECOM:
            return self._deliver_wecom(n)
        return self._deliver_email(n)

    def _deliver_wecom(self, n: EmployeeNotice) -> EmployeeNotice:
        if self.wecom is None or self.agent_id is None:
            return replace(n, last_error=self.wecom_problem or "WeCom is not configured", next_attempt_ns=self._later(n.attempts))
        summary = " ".join(n.text.split())[:120]
        card = {"title": n.title[:128], "description": f"{summary}…\n请点击阅读全文并确认。", "url": notice_link(
            self.base_url, n.key), "btntxt": "阅读并确认"}
        try:
            result = self.wecom.send_app_message(n.address or "", self.agent_id, textcard=card)
        except WeComRateLimited as exc:
            return replace(n, last_error=str(exc), next_attempt_ns=self.clock() + int(exc.retry_after_s * 1e9))
        except WeComError as exc:
            if exc.retry:
                return replace(n, last_error=str(exc), next_attempt_ns=self._later(n.attempts))
            return replace(n, state=NoticeState.NOT_DELIVERED.value, last_error=str(exc), next_attempt_ns=0)
        if not result.delivered_to(n.address or ""):
            return replace(n, state=NoticeState.NOT_DELIVERED.value, msgid=result.msgid or None, next_attempt_ns=0,
                           last_error=f"WeCom did not deliver to {n.address} (invaliduser)")
        return replace(n, state=NoticeState.DELIVERED.value, msgid=result.msgid, delivered_at_ns=self.clock(),
                       last_error=None, next_attempt_ns=0)

    def _deliver_email(self, n: EmployeeNotice) -> EmployeeNotice:
        if self.mailer is None:
            return replace(n, last_error="no mail server configured (notify.smtp_host)",
                           next_attempt_ns=self._later(n.attempts))
        msg = EmailMessage()
        msg["Subject"] = n.title
        msg["From"] = self.mail_from
        msg["To"] = n.address or ""
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="shoumi")
        msg.set_content(f"{n.text}\n\n请登录后阅读全文并确认：{notice_link(self.base_url, n.key)}\n", charset="utf-8")
        attempt = self.mailer.send_message(msg)
        if attempt.ok:
            return replace(n, state=NoticeState.DELIVERED.value, msgid=str(msg["Message-ID"]),
                           delivered_at_ns=self.clock(), last_error=None, next_attempt_ns=0)
        if attempt.retry:
            return replace(n, last_error=attempt.error, next_attempt_ns=self._later(n.attempts))
        return replace(n, state=NoticeState.NOT_DELIVERED.value, last_error=attempt.error, next_attempt_ns=0)

    # --- the proof to the bridge -----------------------------------------------------------------------
    def _report(self, n: EmployeeNotice) -> EmployeeNotice:
        if self.bridge is None:
            return replace(n, proof_answer="no payroll bridge configured", next_attempt_ns=self._later(4))
        from collector.cases.handoff import BridgeUnreachable
        try:
            answer = self.bridge.serve_notice(n.case_id or "", n.bridge_notice_id or "", proof_of_service(n))
        except BridgeUnreachable as exc:
            return replace(n, proof_answer=str(exc)[:300], next_attempt_ns=self._later(2))
        if answer.status == 200:
            return replace(n, proof_reported_at_ns=self.clock(), proof_answer="accepted", next_attempt_ns=0)
        detail = str(answer.body.get("detail", answer.body))[:300]
        return replace(n, proof_answer=f"refused ({answer.status}): {detail}", next_attempt_ns=self._later(8))

    def _save(self, before: EmployeeNotice, after: EmployeeNotice) -> None:
        now = self.clock()
        try:
            with self.store.transaction() as tx:
                current = tx.get_employee_notice(before.key)
                if current is None or current.state != before.state:
                    return  # acknowledged meanwhile: the employee's step wins, the attempt is tried again
                tx.save_employee_notice(after)
                if after.state != before.state:
                    _audit(tx, now, _ACTOR, f"wecom.notice.{after.state}", after, msgid=after.msgid,
                           error=after.last_error, delivered_at=china_iso(after.delivered_at_ns))
                elif after.proof_answer != before.proof_answer:
                    _audit(tx, now, _ACTOR, "wecom.notice.proof_reported", after, answer=after.proof_answer)
        except StoreUnavailable:
            log.warning("notice %s: the attempt's result was not recorded (store unavailable)", before.key)
