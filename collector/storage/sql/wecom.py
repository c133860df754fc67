"""SQL for the WeCom area: userids of employees and accounts, notices to employees (collector/wecom)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.storage.base import AlreadyExists
from collector.storage.sql.schema import employee_notices, wecom_userids
from collector.wecom.models import EmployeeNotice, NoticeKind, NoticeState

__all__ = ["WeComSql"]

_FIELDS = [f.name for f in dataclasses.fields(EmployeeNotice)]


def _notice(row: Any) -> EmployeeNotice:
    return EmployeeNotice(**{name: row._mapping[name] for name in _FIELDS})


class WeComSql:
    """The WeCom area."""

    _conn: Connection

    def put_wecom_userid(self, *, subject: str, userid: str | None, actor: str, now_ns: int) -> None:
        """Sets (or with None removes) the WeCom userid of an employee or account."""
        self._conn.execute(wecom_userids.delete().where(wecom_userids.c.subject == subject))
        if userid is not None:
            self._conn.execute(wecom_userids.insert().values(subject=subject, userid=userid, updated_by=actor,
                                                             updated_at_ns=now_ns))

    def get_wecom_userid(self, subject: str) -> str | None:
        """The WeCom userid of an employee or account, if any."""
        found = self._conn.execute(sa.select(wecom_userids.c.userid).where(wecom_userids.c.subject == subject)).first()
        return None if found is None else str(found[0])

    def add_employee_notice(self, notice: EmployeeNotice) -> None:
        """Stores a new notice; AlreadyExists if its key is taken."""
        try:
            with self._conn.begin_nested():
                self._conn.execute(employee_notices.insert().values(**dataclasses.asdict(notice)))
        except IntegrityError as exc:
            raise AlreadyExists(f"notice {notice.key} exists") from exc

    def get_employee_notice(self, key: str) -> EmployeeNotice | None:
        """A notice by its key."""
        row = self._conn.execute(sa.select(employee_notices).where(employee_notices.c.key == key)).first()
        return None if row is None else _notice(row)

    def save_employee_notice(self, notice: EmployeeNotice) -> None:
        """Replaces a stored notice."""
        values = dataclasses.asdict(notice)
        self._conn.execute(employee_notices.update().where(employee_notices.c.key == values.pop("key")).values(**values))

    def list_employee_notices(self, *, employee_id: str | None = None,
                              case_id: str | None = None) -> Sequence[EmployeeNotice]:
        """Notices, oldest first, of one employee and/or one case."""
        q = sa.select(employee_notices)
        if employee_id is not None:
            q = q.where(employee_notices.c.employee_id == employee_id)
        if case_id is not None:
            q = q.where(employee_notices.c.case_id == case_id)
        rows = self._conn.execute(q.order_by(employee_notices.c.created_at_ns, employee_notices.c.key))
        return [_notice(r) for r in rows]

    def employee_notice_by_msgid(self, msgid: str) -> EmployeeNotice | None:
        """The notice WeCom gave this msgid."""
        row = self._conn.execute(sa.select(employee_notices).where(employee_notices.c.msgid == msgid)).first()
        return None if row is None else _notice(row)

    def due_employee_notices(self, *, now_ns: int, limit: int) -> Sequence[EmployeeNotice]:
        """Pending notices due now, and acknowledged deduction notices whose proof the bridge has not taken."""
        c = employee_notices.c
        to_report = sa.and_(c.state == NoticeState.ACKNOWLEDGED.value, c.kind == NoticeKind.DEDUCTION.value,
                            c.bridge_notice_id.is_not(None), c.proof_reported_at_ns.is_(None))
        rows = self._conn.execute(sa.select(employee_notices)
                                  .where(c.next_attempt_ns <= now_ns, sa.or_(c.state == NoticeState.PENDING.value,
                                                                             to_report))
                                  .order_by(c.created_at_ns, c.key).limit(limit))
        return [_notice(r) for r in rows]
