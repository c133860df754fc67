"""SQL for cases: their history, comments, attachments, HR's records and the payroll outbox."""

from __future__ import annotations

from sqlalchemy.engine import Connection

__all__ = ["CasesSql"]


class CasesSql:
    """The case area."""

    _conn: Connection
