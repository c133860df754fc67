"""The SQL store: SQLite (the embedded default) and PostgreSQL through SQLAlchemy Core.

The only part of the collector that speaks SQL. Each ``transaction()`` is one database
transaction on one connection: SQLite (WAL, synchronous=FULL) takes its write lock at BEGIN
(IMMEDIATE), PostgreSQL locks the chain-head row (SELECT ... FOR UPDATE), so the chain check and
the insert of a batch are one serialized step, across any number of collector processes.
Database errors that mean "not now" (connection lost, server restarting, disk full, locked) become
``StoreUnavailable`` without the driver's text, which names hosts and ports.

The schema is built and upgraded by Alembic migrations (./migrations) when the store opens.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from collector.storage.base import StoreError, StoreUnavailable
from collector.storage.sql.agents import AgentsSql
from collector.storage.sql.agreements import AgreementsSql
from collector.storage.sql.alerts import AlertsSql
from collector.storage.sql.batches import BatchesSql
from collector.storage.sql.cases import CasesSql
from collector.storage.sql.notify import NotifySql
from collector.storage.sql.people import PeopleSql
from collector.storage.sql.policies import PoliciesSql
from collector.storage.sql.privacy import PrivacySql
from collector.storage.sql.raw import RawCursor
from collector.storage.sql.retention import RetentionSql
from collector.storage.sql.schema import schema_info
from collector.storage.sql.tree import TreeSql
from collector.storage.sql.wecom import WeComSql
from collector.storage.sql.witnesses import WitnessesSql

__all__ = ["SqlStore", "SqlTransaction", "open_store", "migrate", "DB_FILE"]

log = logging.getLogger("shoumi.collector.storage")

DB_FILE = "collector.db"
_MIGRATIONS = Path(__file__).parent / "migrations"
_READ_ONLY = "shoumi_read_only"


class SqlTransaction(AgentsSql, BatchesSql, AlertsSql, PeopleSql, TreeSql, CasesSql, NotifySql, PrivacySql,
                     WitnessesSql, AgreementsSql, RetentionSql, PoliciesSql, WeComSql):
    """Every area over one connection inside one transaction."""

    def __init__(self, conn: Connection, dialect: str) -> None:
        self._conn = conn
        self._dialect = dialect
        self._raw = RawCursor(conn, dialect)


def open_store(url_or_dir: str | Path) -> "SqlStore":
    """Opens (and creates or upgrades) a store: a SQLAlchemy URL or a data directory for SQLite.

    A data directory is made 0700 and the database file 0600: it holds events, the audit log and
    password hashes.
    """
    text = str(url_or_dir)
    if "://" in text:
        url = text
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
    else:
        data_dir = Path(text)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(data_dir, 0o700)
        db = data_dir / DB_FILE
        os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o600))
        for path in (db, data_dir / f"{DB_FILE}-wal", data_dir / f"{DB_FILE}-shm"):
            if path.exists():
                os.chmod(path, 0o600)
        url = f"sqlite:///{db}"
    return SqlStore(sa.create_engine(url, pool_pre_ping=True))


def _sqlite_setup(engine: Engine) -> None:
    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")


def migrate(conn: Connection) -> None:
    """Brings the schema on this connection up to the newest migration."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = conn
    inspector = sa.inspect(conn)
    if inspector.has_table(schema_info.name) and not inspector.has_table("alembic_version"):
        command.stamp(cfg, "0001")  # made by the first release, before migrations existed
    try:
        command.upgrade(cfg, "head")
    except CommandError as exc:
        raise StoreError(f"the store's schema is not one this collector knows (newer?): {exc}") from exc


def _unavailable(exc: sa_exc.DBAPIError) -> bool:
    if isinstance(exc, sa_exc.IntegrityError):
        return False
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) or exc.connection_invalidated


class SqlStore:
    """``Store`` over SQLAlchemy Core."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect == "sqlite":
            _sqlite_setup(engine)
        with self._translated(), engine.begin() as conn:
            if self.dialect == "postgresql":
                # two collectors starting together on one database: one migrates, the other waits
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7242001)")
            migrate(conn)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        dbapi = self.engine.dialect.dbapi
        # what the driver raises itself where we use it directly (COPY, executemany of events)
        driver_away: tuple[type[BaseException], ...] = (
            (dbapi.OperationalError, dbapi.InterfaceError) if dbapi is not None else ())
        try:
            yield
        except sa_exc.DBAPIError as exc:
            if not _unavailable(exc):
                raise
            log.warning("store unavailable: %s", exc)
            raise StoreUnavailable("the database cannot be reached or written; retry later") from exc
        except driver_away as exc:
            log.warning("store unavailable: %s", exc)
            raise StoreUnavailable("the database cannot be reached or written; retry later") from exc

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        """A read-write unit of work: commits on leaving, rolls back on an exception."""
        with self._translated(), self.engine.begin() as conn:
            yield SqlTransaction(conn, self.dialect)

    @contextmanager
    def read(self) -> Iterator[SqlTransaction]:
        """A unit of work that only reads."""
        with self._translated(), self.engine.connect() as conn:
            conn = conn.execution_options(**{_READ_ONLY: True})
            with conn.begin():
                yield SqlTransaction(conn, self.dialect)

    def health(self) -> str | None:
        """Returns None when a write commits, else why not."""
        try:
            with self.transaction() as tx:
                tx._conn.execute(schema_info.update().values(version=schema_info.c.version))
        except StoreUnavailable as exc:
            return str(exc)
        return None

    def close(self) -> None:
        """Releases the connections."""
        self.engine.dispose()
