"""Notices to employees and their proof of service: pure values.

A notice (``EmployeeNotice``) is one text sent to one employee: the deduction notice of a case (the bridge's
notice, by its id) or the monitoring notice (collector/agreements). Its states:

    pending        -> delivered       WeCom answered a msgid and did not list the userid as invalid, or the
                                      mail server took the message
    pending        -> not_delivered   WeCom refused it for good (the userid is invalid, ...): the reason kept
    pending        -> pending         WeCom down / rate limited: tried again later by the outbox
    delivered      -> acknowledged    the employee signed in, read the full text and pressed "acknowledge"

``opened_at_ns`` (the page shown to the employee) and ``read_at_ns`` (a WeCom read receipt through the
verified callback) are recorded along the way. Nothing is ever served unless acknowledged: that is the rule
the payroll bridge applies (docs/wecom.md).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from dataclasses import dataclass
from typing import Any

__all__ = ["NoticeKind", "NoticeState", "EmployeeNotice", "WECOM", "EMAIL", "proof_of_service", "text_sha256",
           "employee_subject", "account_subject", "china_iso"]

WECOM = "wecom"
EMAIL = "email"
_CHINA = dt.timezone(dt.timedelta(hours=8))


class NoticeKind(str, enum.Enum):
    DEDUCTION = "deduction"
    MONITORING = "monitoring"


class NoticeState(str, enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    NOT_DELIVERED = "not_delivered"
    ACKNOWLEDGED = "acknowledged"


def text_sha256(text: str) -> str:
    """SHA-256 of the text's UTF-8 bytes (what the employee was shown)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def employee_subject(employee_id: str) -> str:
    """The key of an employee's WeCom userid."""
    return f"employee:{employee_id}"


def account_subject(username: str) -> str:
    """The key of a collector account's WeCom userid (staff notifications)."""
    return f"account:{username}"


def china_iso(ns: int | None) -> str | None:
    """A time as ISO 8601 in China time (+08:00), to the second."""
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, _CHINA).isoformat(timespec="seconds")


@dataclass(frozen=True)
class EmployeeNotice:
    key: str  # random, in the link
    kind: str
    employee_id: str
    title: str
    text: str
    text_sha256: str
    created_by: str
    created_at_ns: int
    case_id: str | None = None  # the collector's case (deduction notices)
    bridge_notice_id: str | None = None  # the bridge's notice id (N-<case>-<yyyymmdd>)
    channel: str | None = None  # wecom | email
    address: str | None = None  # the WeCom userid or the email address
    state: str = NoticeState.PENDING.value
    msgid: str | None = None
    attempts: int = 0
    next_attempt_ns: int = 0
    last_error: str | None = None
    delivered_at_ns: int | None = None
    opened_at_ns: int | None = None
    read_at_ns: int | None = None
    acknowledged_at_ns: int | None = None
    acknowledged_by: str | None = None  # the account that pressed it
    proof_reported_at_ns: int | None = None  # when the bridge accepted the proof
    proof_answer: str | None = None  # the bridge's last answer (or why it was not reached)

    @property
    def served(self) -> bool:
        """Served = delivered and acknowledged by the employee."""
        return self.state == NoticeState.ACKNOWLEDGED.value and self.delivered_at_ns is not None


def proof_of_service(n: EmployeeNotice) -> dict[str, Any]:
    """The proof the payroll bridge's written-notice gate reads (times in China time, ISO 8601)."""
    return {"notice_id": n.bridge_notice_id, "channel": n.channel, "msgid": n.msgid, "address": n.address,
            "text_sha256": n.text_sha256, "delivered_at": china_iso(n.delivered_at_ns),
            "opened_at": china_iso(n.opened_at_ns), "read_at": china_iso(n.read_at_ns),
            "acknowledged_at": china_iso(n.acknowledged_at_ns), "acknowledged_by": n.acknowledged_by,
            "collector_notice": n.key}
