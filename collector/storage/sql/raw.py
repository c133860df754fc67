"""The few statements of the ingest path, run on the driver's cursor directly.

A batch runs about seven statements; through SQLAlchemy's execution machinery each costs more than
the database work itself (py-spy and cProfile put it at two thirds of a small batch's time). These
are written once, with the placeholder each driver takes, and their errors are the driver's own,
which the store translates (collector/storage/sql/store.py ``_translated``).
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy.engine import Connection

__all__ = ["RawCursor"]


class RawCursor:
    """Runs SQL written with ``?`` placeholders on the connection's driver (``%s`` for psycopg)."""

    def __init__(self, conn: Connection, dialect: str) -> None:
        self._conn = conn
        self._pg = dialect == "postgresql"
        self._sql: dict[str, str] = {}

    def _text(self, sql: str) -> str:
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = sql.replace("?", "%s") if self._pg else sql
        return found

    def one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """Runs a query and returns its first row."""
        dbapi = self._conn.connection.driver_connection
        assert dbapi is not None
        cur = dbapi.cursor()
        try:
            cur.execute(self._text(sql), tuple(params))
            row = cur.fetchone()
        finally:
            cur.close()
        return None if row is None else tuple(row)

    def all(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Runs a query and returns its rows."""
        dbapi = self._conn.connection.driver_connection
        assert dbapi is not None
        cur = dbapi.cursor()
        try:
            cur.execute(self._text(sql), tuple(params))
            rows = cur.fetchall()
            return rows if not rows or type(rows[0]) is tuple else [tuple(r) for r in rows]
        finally:
            cur.close()

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Runs a statement once per row (the driver's executemany) and returns the rows it changed."""
        dbapi = self._conn.connection.driver_connection
        assert dbapi is not None
        cur = dbapi.cursor()
        try:
            cur.executemany(self._text(sql), rows)
            return int(cur.rowcount)
        finally:
            cur.close()

    def run(self, sql: str, params: Sequence[Any]) -> int:
        """Runs a statement and returns the rows it changed."""
        dbapi = self._conn.connection.driver_connection
        assert dbapi is not None
        cur = dbapi.cursor()
        try:
            cur.execute(self._text(sql), tuple(params))
            return int(cur.rowcount)
        finally:
            cur.close()
