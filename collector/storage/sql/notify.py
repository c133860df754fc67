"""SQL for the notification outbox (WeCom group robots, email)."""

from __future__ import annotations

from sqlalchemy.engine import Connection

__all__ = ["NotifySql"]


class NotifySql:
    """The notification area."""

    _conn: Connection
