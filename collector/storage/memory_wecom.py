"""The in-memory fake's WeCom area (collector/wecom), mixed into ``MemoryTransaction``."""

from __future__ import annotations

from typing import Any, Sequence

from collector.storage.base import AlreadyExists
from collector.wecom.models import EmployeeNotice, NoticeKind, NoticeState

__all__ = ["MemoryWeCom"]


class MemoryWeCom:
    """WeCom userids keyed by subject, notices to employees keyed by their link key."""

    s: Any  # the transaction's copy of the state (collector/storage/memory.py _State)

    def put_wecom_userid(self, *, subject: str, userid: str | None, actor: str, now_ns: int) -> None:
        """Sets (or with None removes) the WeCom userid of an employee or account."""
        if userid is None:
            self.s.wecom_userids.pop(subject, None)
        else:
            self.s.wecom_userids[subject] = (userid, actor, now_ns)

    def get_wecom_userid(self, subject: str) -> str | None:
        """The WeCom userid of an employee or account, if any."""
        found = self.s.wecom_userids.get(subject)
        return None if found is None else str(found[0])

    def add_employee_notice(self, notice: EmployeeNotice) -> None:
        """Stores a new notice; AlreadyExists if its key is taken."""
        if notice.key in self.s.employee_notices:
            raise AlreadyExists(f"notice {notice.key} exists")
        self.s.employee_notices[notice.key] = notice

    def get_employee_notice(self, key: str) -> EmployeeNotice | None:
        """A notice by its key."""
        found: EmployeeNotice | None = self.s.employee_notices.get(key)
        return found

    def save_employee_notice(self, notice: EmployeeNotice) -> None:
        """Replaces a stored notice."""
        self.s.employee_notices[notice.key] = notice

    def list_employee_notices(self, *, employee_id: str | None = None,
                              case_id: str | None = None) -> Sequence[EmployeeNotice]:
        """Notices, oldest first, of one employee and/or one case."""
        found = [n for n in self.s.employee_notices.values()
                 if (employee_id is None or n.employee_id == employee_id) and (case_id is None or n.case_id == case_id)]
        return sorted(found, key=lambda n: (n.created_at_ns, n.key))

    def employee_notice_by_msgid(self, msgid: str) -> EmployeeNotice | None:
        """The notice WeCom gave this msgid."""
        return next((n for n in self.s.employee_notices.values() if n.msgid == msgid), None)

    def due_employee_notices(self, *, now_ns: int, limit: int) -> Sequence[EmployeeNotice]:
        """Pending notices whose next attempt is due, and acknowledged deduction notices whose proof the bridge
        has not taken yet (due likewise), oldest first."""
        found = [n for n in self.list_employee_notices() if n.next_attempt_ns <= now_ns and (
            n.state == NoticeState.PENDING.value or (
                n.state == NoticeState.ACKNOWLEDGED.value and n.kind == NoticeKind.DEDUCTION.value
                and n.bridge_notice_id is not None and n.proof_reported_at_ns is None))]
        return found[:limit]
