"""The SQL store: SQLite (the embedded default) and PostgreSQL through SQLAlchemy Core.

The only module of the collector that speaks SQL. SQLite runs in WAL mode with synchronous=FULL
and takes its write lock at BEGIN (IMMEDIATE), so the chain-head check and the insert of a batch
are one serialized step; PostgreSQL gets the same through SELECT ... FOR UPDATE on the head row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from shoumi.batch import ChainHead

from collector.domain.records import (
    AgentRecord,
    Alert,
    AuditEntry,
    EventFilter,
    Page,
    StoredBatch,
    StoredEvent,
    User,
)
from collector.domain.evidence import BatchRow, EventRow, SignedTreeHead, TreeLeaf
from collector.storage.base import AlreadyExists, ChainConflict

__all__ = ["SqlStore", "open_store", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
metadata = sa.MetaData()

schema_info = sa.Table(
    "schema_info", metadata, sa.Column("version", sa.Integer, primary_key=True)
)
agents = sa.Table(
    "agents",
    metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("os", sa.Text, nullable=False),
    sa.Column("agent_version", sa.Text, nullable=False),
    sa.Column("enrolled_at_ns", sa.BigInteger, nullable=False),
    sa.Column("revoked_at_ns", sa.BigInteger),
    sa.Column("last_seen_ns", sa.BigInteger),
    sa.Column("heartbeat_interval_s", sa.Float),
    sa.Column("liveness", sa.String(16), nullable=False, default="enrolled"),
)
enroll_tokens = sa.Table(
    "enroll_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_at_ns", sa.BigInteger, nullable=False),
    sa.Column("used_at_ns", sa.BigInteger),
    sa.Column("used_by_agent", sa.String(64)),
    sa.Column("revoked_at_ns", sa.BigInteger),
)
certificates = sa.Table(
    "certificates",
    metadata,
    sa.Column("serial", sa.String(48), primary_key=True),
    sa.Column("agent_id", sa.String(64), nullable=False, index=True),
    sa.Column("not_before_ns", sa.BigInteger, nullable=False),
    sa.Column("not_after_ns", sa.BigInteger, nullable=False),
    sa.Column("revoked_at_ns", sa.BigInteger),
)
chain_heads = sa.Table(
    "chain_heads",
    metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.LargeBinary, nullable=False),
    # how far detection has run over this agent's stream (it runs after the commit that stores)
    sa.Column("detected_epoch", sa.BigInteger, nullable=False, default=0),
    sa.Column("detected_seq", sa.BigInteger, nullable=False, default=0),
)
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("row_id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("batch_hash", sa.LargeBinary, nullable=False),
    sa.Column("prev_hash", sa.LargeBinary, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
    sa.Column("canonical", sa.LargeBinary, nullable=False),
    sa.Column("received_at_ns", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("agent_id", "epoch", "first_seq", name="uq_batches_agent_epoch_seq"),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("row_id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("time_ns", sa.BigInteger, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("dest_path", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("user_name", sa.Text, nullable=False),
    sa.Column("uid", sa.BigInteger, nullable=False),
    sa.Column("pid", sa.BigInteger, nullable=False),
    sa.Column("process", sa.Text, nullable=False),
    sa.Column("exe", sa.Text, nullable=False),
    sa.Column("attributes", sa.Text, nullable=False),
    sa.UniqueConstraint("agent_id", "epoch", "seq", name="uq_events_agent_epoch_seq"),
)
sa.Index("ix_events_user_kind_time", events.c.user_name, events.c.kind, events.c.time_ns)
sa.Index("ix_events_kind", events.c.kind, events.c.row_id)
sa.Index("ix_events_time", events.c.time_ns)
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("user_name", sa.Text, nullable=False),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("updated_at_ns", sa.BigInteger, nullable=False),
    sa.Column("event_ids", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("last_event_ns", sa.BigInteger, nullable=False),
)
sa.Index("ix_alerts_rule_user", alerts.c.rule, alerts.c.user_name, alerts.c.status)
users = sa.Table(
    "users",
    metadata,
    sa.Column("username", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("password_hash", sa.Text),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
)
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(128), sa.ForeignKey("users.username"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_at_ns", sa.BigInteger),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
)

# Tamper evidence (collector/transparency.py, collector/verify.py): which batch row became which
# Merkle leaf, and the signed tree heads over those leaves. Written only by the tree-head signer.
tree_leaves = sa.Table(
    "tree_leaves",
    metadata,
    sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("batch_row_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
)
tree_heads = sa.Table(
    "tree_heads",
    metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.LargeBinary, nullable=False),
    sa.Column("timestamp_ns", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.LargeBinary, nullable=False),
    sa.Column("signature", sa.LargeBinary, nullable=False),
)


def open_store(url_or_dir: str | Path) -> "SqlStore":
    """Opens (and creates or upgrades) a store: a SQLAlchemy URL or a data directory for SQLite."""
    text = str(url_or_dir)
    if "://" in text:
        url = text
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
    else:
        data_dir = Path(text)
        data_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{data_dir / 'collector.db'}"
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
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class SqlStore:
    """``Store`` over SQLAlchemy Core; one transaction per call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect == "sqlite":
            _sqlite_setup(engine)
        metadata.create_all(engine)
        with engine.begin() as conn:
            found = conn.execute(sa.select(schema_info.c.version)).scalar()
            if found is None:
                conn.execute(schema_info.insert().values(version=SCHEMA_VERSION))
            elif found > SCHEMA_VERSION:
                raise RuntimeError(
                    f"store schema version {found} is newer than this collector ({SCHEMA_VERSION})"
                )

    def close(self) -> None:
        """Releases the connections."""
        self.engine.dispose()

    # --- agents and enrollment -------------------------------------------------------------
    def add_enroll_token(
        self, *, token_hash: str, created_at_ns: int, expires_at_ns: int, created_by: str
    ) -> None:
        """Records a new enrollment token (only its hash)."""
        with self.engine.begin() as conn:
            conn.execute(
                enroll_tokens.insert().values(
                    token_hash=token_hash,
                    created_by=created_by,
                    created_at_ns=created_at_ns,
                    expires_at_ns=expires_at_ns,
                )
            )

    def consume_enroll_token(
        self, *, token_hash: str, agent: AgentRecord, now_ns: int
    ) -> str | None:
        """Uses a token and records the agent atomically; returns why not, or None."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(enroll_tokens)
                .where(enroll_tokens.c.token_hash == token_hash)
                .with_for_update()
            ).first()
            if row is None:
                return "unknown"
            if row.revoked_at_ns is not None:
                return "revoked"
            if row.used_at_ns is not None:
                return "used"
            if row.expires_at_ns <= now_ns:
                return "expired"
            conn.execute(
                enroll_tokens.update()
                .where(enroll_tokens.c.token_hash == token_hash)
                .values(used_at_ns=now_ns, used_by_agent=agent.agent_id)
            )
            try:
                conn.execute(agents.insert().values(**_agent_row(agent)))
            except IntegrityError as exc:
                raise AlreadyExists(f"agent {agent.agent_id} exists") from exc
        return None

    def revoke_enroll_token(self, *, token_hash: str, now_ns: int) -> bool:
        """Revokes an unused token; returns whether one was revoked."""
        with self.engine.begin() as conn:
            res = conn.execute(
                enroll_tokens.update()
                .where(
                    enroll_tokens.c.token_hash == token_hash,
                    enroll_tokens.c.used_at_ns.is_(None),
                    enroll_tokens.c.revoked_at_ns.is_(None),
                )
                .values(revoked_at_ns=now_ns)
            )
            return bool(res.rowcount)

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        """Gets an agent by its id."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(agents).where(agents.c.agent_id == agent_id)).first()
        return None if row is None else _agent_from(row)

    def update_agent_liveness(
        self, *, agent_id: str, liveness: str, last_seen_ns: int | None = None, heartbeat_interval_s: float | None = None
    ) -> None:
        """Records when an agent was last heard from, its heartbeat interval and its liveness."""
        values: dict[str, Any] = {"liveness": liveness}
        if last_seen_ns is not None:
            values["last_seen_ns"] = last_seen_ns
        if heartbeat_interval_s is not None:
            values["heartbeat_interval_s"] = heartbeat_interval_s
        with self.engine.begin() as conn:
            conn.execute(agents.update().where(agents.c.agent_id == agent_id).values(**values))

    def revoke_agent(self, *, agent_id: str, now_ns: int) -> bool:
        """Marks an agent revoked; returns whether it existed and was not revoked yet."""
        with self.engine.begin() as conn:
            res = conn.execute(
                agents.update()
                .where(agents.c.agent_id == agent_id, agents.c.revoked_at_ns.is_(None))
                .values(revoked_at_ns=now_ns)
            )
            return bool(res.rowcount)

    def add_certificate(self, *, serial: int, agent_id: str, not_before_ns: int, not_after_ns: int) -> None:
        """Records a client certificate issued to an agent."""
        with self.engine.begin() as conn:
            conn.execute(certificates.insert().values(
                serial=str(serial), agent_id=agent_id, not_before_ns=not_before_ns, not_after_ns=not_after_ns))

    def certificate_status(self, *, serial: int) -> tuple[str, bool] | None:
        """Returns (agent id, revoked) of an issued certificate, or None if the collector never issued it."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(certificates).where(certificates.c.serial == str(serial))).first()
        return None if row is None else (row.agent_id, row.revoked_at_ns is not None)

    def revoke_certificate(self, *, serial: int, now_ns: int) -> bool:
        """Revokes one certificate; returns whether it was issued and not revoked yet."""
        with self.engine.begin() as conn:
            res = conn.execute(
                certificates.update()
                .where(certificates.c.serial == str(serial), certificates.c.revoked_at_ns.is_(None))
                .values(revoked_at_ns=now_ns)
            )
            return bool(res.rowcount)

    def list_agents(self) -> Sequence[AgentRecord]:
        """Lists all enrolled agents."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(agents).order_by(agents.c.enrolled_at_ns)).all()
        return [_agent_from(r) for r in rows]

    # --- ingest ----------------------------------------------------------------------------
    def chain_head(self, agent_id: str) -> ChainHead | None:
        """Gets where the agent's chain stands."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(chain_heads).where(chain_heads.c.agent_id == agent_id)
            ).first()
        return None if row is None else ChainHead(row.epoch, row.last_seq, bytes(row.last_hash))

    def detected_upto(self, agent_id: str) -> tuple[int, int]:
        """Returns (epoch, seq) up to which detection has run over the agent's stored events."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(chain_heads.c.detected_epoch, chain_heads.c.detected_seq).where(chain_heads.c.agent_id == agent_id)
            ).first()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def mark_detected(self, *, agent_id: str, epoch: int, seq: int) -> None:
        """Records that detection has run up to (epoch, seq); never moves backwards."""
        with self.engine.begin() as conn:
            conn.execute(
                chain_heads.update()
                .where(
                    chain_heads.c.agent_id == agent_id,
                    sa.or_(
                        chain_heads.c.detected_epoch < epoch,
                        sa.and_(chain_heads.c.detected_epoch == epoch, chain_heads.c.detected_seq < seq),
                    ),
                )
                .values(detected_epoch=epoch, detected_seq=seq)
            )

    def batch_hash_at(self, *, agent_id: str, epoch: int, first_seq: int) -> bytes | None:
        """Gets the hash of the stored batch that starts at (agent, epoch, first_seq)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(batches.c.batch_hash).where(
                    batches.c.agent_id == agent_id,
                    batches.c.epoch == epoch,
                    batches.c.first_seq == first_seq,
                )
            ).scalar()
        return None if value is None else bytes(value)

    def store_batch(
        self,
        batch: StoredBatch,
        events_: Sequence[StoredEvent],
        *,
        expected_head: ChainHead | None,
    ) -> None:
        """Stores a verified batch and its events if the chain head has not moved."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(chain_heads)
                .where(chain_heads.c.agent_id == batch.agent_id)
                .with_for_update()
            ).first()
            current = None if row is None else ChainHead(row.epoch, row.last_seq, bytes(row.last_hash))
            if current != expected_head:
                raise ChainConflict(f"chain head of {batch.agent_id} moved")
            new_head = dict(epoch=batch.epoch, last_seq=batch.last_seq, last_hash=batch.batch_hash)
            try:
                if row is None:
                    conn.execute(chain_heads.insert().values(agent_id=batch.agent_id, **new_head))
                else:
                    conn.execute(
                        chain_heads.update()
                        .where(chain_heads.c.agent_id == batch.agent_id)
                        .values(**new_head)
                    )
                conn.execute(batches.insert().values(**_batch_row(batch)))
                conn.execute(events.insert(), [_event_row(e) for e in events_])
            except IntegrityError as exc:
                raise ChainConflict(f"batch of {batch.agent_id} already stored") from exc

    def list_batches(self, *, agent_id: str | None = None) -> Sequence[StoredBatch]:
        """Lists stored batches in ingest order."""
        query = sa.select(batches).order_by(batches.c.row_id)
        if agent_id is not None:
            query = query.where(batches.c.agent_id == agent_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_batch_from(r) for r in rows]

    # --- events ----------------------------------------------------------------------------
    def list_events(self, flt: EventFilter, *, cursor: int | None, limit: int) -> Page:
        """Lists events in ingest order after the cursor, matching the filter."""
        query = sa.select(events).order_by(events.c.row_id).limit(limit + 1)
        if cursor is not None:
            query = query.where(events.c.row_id > cursor)
        if flt.agent_id is not None:
            query = query.where(events.c.agent_id == flt.agent_id)
        if flt.kind is not None:
            query = query.where(events.c.kind == flt.kind)
        if flt.user is not None:
            query = query.where(events.c.user_name == flt.user)
        if flt.since_ns is not None:
            query = query.where(events.c.time_ns >= flt.since_ns)
        if flt.until_ns is not None:
            query = query.where(events.c.time_ns < flt.until_ns)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        items = tuple(_event_from(r) for r in rows[:limit])
        more = len(rows) > limit
        return Page(items, str(items[-1].row_id) if more and items else None)

    def events_in_window(
        self, *, user: str, kind: str, since_ns: int, until_ns: int, cap: int
    ) -> Sequence[StoredEvent]:
        """Lists one user's events of a kind with since_ns <= time <= until_ns, oldest first."""
        query = (
            sa.select(events)
            .where(
                events.c.user_name == user,
                events.c.kind == kind,
                events.c.time_ns >= since_ns,
                events.c.time_ns <= until_ns,
            )
            .order_by(events.c.time_ns, events.c.row_id)
            .limit(cap)
        )
        with self.engine.connect() as conn:
            return [_event_from(r) for r in conn.execute(query).all()]

    # --- alerts ----------------------------------------------------------------------------
    def add_alert(self, alert: Alert) -> Alert:
        """Stores a new alert and returns it with its id."""
        row = _alert_row(alert)
        row.pop("id")
        with self.engine.begin() as conn:
            new_id = conn.execute(alerts.insert().values(**row).returning(alerts.c.id)).scalar_one()
        return _replace_id(alert, int(new_id))

    def update_alert(self, alert: Alert) -> None:
        """Overwrites a stored alert."""
        row = _alert_row(alert)
        with self.engine.begin() as conn:
            conn.execute(alerts.update().where(alerts.c.id == alert.id).values(**row))

    def latest_open_alert(self, *, rule: str, user: str | None = None, agent_id: str | None = None) -> Alert | None:
        """Gets the most recently updated open alert of a rule for a user and/or an agent."""
        query = (
            sa.select(alerts)
            .where(alerts.c.rule == rule, alerts.c.status == "open")
            .order_by(alerts.c.updated_at_ns.desc())
            .limit(1)
        )
        if user is not None:
            query = query.where(alerts.c.user_name == user)
        if agent_id is not None:
            query = query.where(alerts.c.agent_id == agent_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _alert_from(row)

    def list_alerts(self, *, cursor: int | None, limit: int, status: str | None = None) -> Page:
        """Lists alerts, newest first, after the cursor."""
        query = sa.select(alerts).order_by(alerts.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(alerts.c.id < cursor)
        if status is not None:
            query = query.where(alerts.c.status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        items = tuple(_alert_from(r) for r in rows[:limit])
        more = len(rows) > limit
        return Page(items, str(items[-1].id) if more and items else None)

    # --- people ----------------------------------------------------------------------------
    def add_user(self, user: User) -> None:
        """Stores a new user."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    users.insert().values(
                        username=user.username,
                        role=user.role,
                        password_hash=user.password_hash,
                        created_at_ns=user.created_at_ns,
                        disabled=user.disabled,
                    )
                )
        except IntegrityError as exc:
            raise AlreadyExists(f"user {user.username!r} exists") from exc

    def get_user(self, username: str) -> User | None:
        """Gets a user by name."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.username == username)).first()
        return None if row is None else _user_from(row)

    def add_token(
        self,
        *,
        token_hash: str,
        username: str,
        kind: str,
        created_at_ns: int,
        expires_at_ns: int | None,
    ) -> None:
        """Stores a bearer or session token's hash for a user."""
        with self.engine.begin() as conn:
            conn.execute(
                tokens.insert().values(
                    token_hash=token_hash,
                    username=username,
                    kind=kind,
                    created_at_ns=created_at_ns,
                    expires_at_ns=expires_at_ns,
                    revoked=False,
                )
            )

    def user_for_token(self, *, token_hash: str, kind: str, now_ns: int) -> User | None:
        """Gets the enabled user a valid, unexpired token of that kind belongs to."""
        query = (
            sa.select(users)
            .join(tokens, tokens.c.username == users.c.username)
            .where(
                tokens.c.token_hash == token_hash,
                tokens.c.kind == kind,
                tokens.c.revoked.is_(False),
                sa.or_(tokens.c.expires_at_ns.is_(None), tokens.c.expires_at_ns > now_ns),
                users.c.disabled.is_(False),
            )
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _user_from(row)

    def revoke_token(self, *, token_hash: str) -> None:
        """Revokes a token."""
        with self.engine.begin() as conn:
            conn.execute(tokens.update().where(tokens.c.token_hash == token_hash).values(revoked=True))

    def append_audit(self, entry: AuditEntry) -> None:
        """Appends one entry to the audit log."""
        with self.engine.begin() as conn:
            conn.execute(
                audit_log.insert().values(
                    at_ns=entry.at_ns,
                    actor=entry.actor,
                    action=entry.action,
                    target=entry.target,
                    details=json.dumps(dict(entry.details), sort_keys=True, ensure_ascii=False),
                )
            )

    def list_audit(self, *, cursor: int | None, limit: int) -> Page:
        """Lists audit entries, newest first."""
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(audit_log.c.id < cursor)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        items = tuple(
            AuditEntry(r.at_ns, r.actor, r.action, r.target, json.loads(r.details), r.id)
            for r in rows[:limit]
        )
        return Page(items, str(items[-1].id) if len(rows) > limit and items else None)

    # --- tamper evidence: Merkle leaves and signed tree heads --------------------------------
    def add_tree_head(self, head: SignedTreeHead, leaves: Sequence[TreeLeaf], *, previous_size: int) -> None:
        """Appends the leaves and their signed head atomically if the tree still has previous_size leaves."""
        with self.engine.begin() as conn:
            current = conn.execute(sa.select(sa.func.max(tree_heads.c.tree_size))).scalar()
            if (current or 0) != previous_size:
                raise ChainConflict(f"the tree has {current or 0} leaves, not {previous_size}")
            try:
                if leaves:
                    conn.execute(
                        tree_leaves.insert(),
                        [dict(leaf_index=x.leaf_index, batch_row_id=x.batch_row_id, leaf_hash=x.leaf_hash) for x in leaves],
                    )
                conn.execute(
                    tree_heads.insert().values(
                        tree_size=head.tree_size,
                        root_hash=head.root_hash,
                        timestamp_ns=head.timestamp_ns,
                        key_id=head.key_id,
                        signature=head.signature,
                    )
                )
            except IntegrityError as exc:
                raise ChainConflict("another signer extended the tree first") from exc

    def latest_tree_head(self) -> SignedTreeHead | None:
        """Gets the signed tree head with the most leaves."""
        query = sa.select(tree_heads).order_by(tree_heads.c.tree_size.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _tree_head_from(row)

    def list_tree_heads(self) -> Sequence[SignedTreeHead]:
        """Lists all signed tree heads, smallest tree first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tree_heads).order_by(tree_heads.c.tree_size)).all()
        return [_tree_head_from(r) for r in rows]

    def list_tree_leaves(self, *, start: int, limit: int) -> Sequence[TreeLeaf]:
        """Lists the tree's leaves from leaf index ``start`` on, in leaf order."""
        query = (
            sa.select(tree_leaves)
            .where(tree_leaves.c.leaf_index >= start)
            .order_by(tree_leaves.c.leaf_index)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [TreeLeaf(r.leaf_index, r.batch_row_id, _raw_bytes(r.leaf_hash)) for r in rows]

    def batches_outside_tree(self, *, limit: int) -> Sequence[BatchRow]:
        """Lists stored batches that are no leaf of the tree yet, in row order."""
        query = (
            sa.select(batches)
            .select_from(batches.outerjoin(tree_leaves, tree_leaves.c.batch_row_id == batches.c.row_id))
            .where(tree_leaves.c.leaf_index.is_(None))
            .order_by(batches.c.row_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_batch_row_from(r) for r in rows]

    def batch_leaves(self, *, after_row_id: int, limit: int) -> Sequence[BatchRow]:
        """Lists stored batches with row_id > after_row_id in row order, exactly as stored."""
        query = sa.select(batches).where(batches.c.row_id > after_row_id).order_by(batches.c.row_id).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_batch_row_from(r) for r in rows]

    def event_rows(self, *, after_row_id: int, limit: int) -> Sequence[EventRow]:
        """Lists events rows with row_id > after_row_id in row order, every column as stored."""
        query = sa.select(events).where(events.c.row_id > after_row_id).order_by(events.c.row_id).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            EventRow(
                r.row_id, r.agent_id, r.epoch, r.seq, r.event_id, r.kind, r.time_ns, r.path, r.dest_path,
                r.size, r.sha256, r.user_name, r.uid, r.pid, r.process, r.exe, r.attributes,
            )
            for r in rows
        ]


def _agent_row(a: AgentRecord) -> dict[str, Any]:
    return dict(
        agent_id=a.agent_id,
        public_key=a.public_key,
        hostname=a.hostname,
        os=a.os,
        agent_version=a.agent_version,
        enrolled_at_ns=a.enrolled_at_ns,
        revoked_at_ns=a.revoked_at_ns,
        last_seen_ns=a.last_seen_ns,
        heartbeat_interval_s=a.heartbeat_interval_s,
        liveness=a.liveness,
    )


def _agent_from(r: Any) -> AgentRecord:
    return AgentRecord(
        r.agent_id, bytes(r.public_key), r.hostname, r.os, r.agent_version, r.enrolled_at_ns, r.revoked_at_ns,
        r.last_seen_ns, r.heartbeat_interval_s, r.liveness,
    )


def _batch_row(b: StoredBatch) -> dict[str, Any]:
    return dict(
        agent_id=b.agent_id,
        epoch=b.epoch,
        first_seq=b.first_seq,
        last_seq=b.last_seq,
        batch_hash=b.batch_hash,
        prev_hash=b.prev_hash,
        signature=b.signature,
        canonical=b.canonical,
        received_at_ns=b.received_at_ns,
    )


def _batch_from(r: Any) -> StoredBatch:
    return StoredBatch(
        r.agent_id,
        r.epoch,
        r.first_seq,
        r.last_seq,
        bytes(r.batch_hash),
        bytes(r.prev_hash),
        bytes(r.signature),
        bytes(r.canonical),
        r.received_at_ns,
    )


def _event_row(e: StoredEvent) -> dict[str, Any]:
    return dict(
        agent_id=e.agent_id,
        epoch=e.epoch,
        seq=e.seq,
        event_id=e.id,
        kind=e.kind,
        time_ns=e.time_ns,
        path=e.path,
        dest_path=e.dest_path,
        size=e.size,
        sha256=e.sha256,
        user_name=e.user,
        uid=e.uid,
        pid=e.pid,
        process=e.process,
        exe=e.exe,
        attributes=json.dumps(dict(e.attributes), sort_keys=True, ensure_ascii=False),
    )


def _event_from(r: Any) -> StoredEvent:
    return StoredEvent(
        agent_id=r.agent_id,
        epoch=r.epoch,
        seq=r.seq,
        id=r.event_id,
        kind=r.kind,
        time_ns=r.time_ns,
        path=r.path,
        dest_path=r.dest_path,
        size=r.size,
        sha256=r.sha256,
        user=r.user_name,
        uid=r.uid,
        pid=r.pid,
        process=r.process,
        exe=r.exe,
        attributes=json.loads(r.attributes),
        row_id=r.row_id,
    )


def _alert_row(a: Alert) -> dict[str, Any]:
    return dict(
        id=a.id,
        rule=a.rule,
        severity=a.severity,
        status=a.status,
        user_name=a.user,
        agent_id=a.agent_id,
        created_at_ns=a.created_at_ns,
        updated_at_ns=a.updated_at_ns,
        event_ids=json.dumps(list(a.event_ids)),
        summary=a.summary,
        last_event_ns=a.last_event_ns,
    )


def _alert_from(r: Any) -> Alert:
    return Alert(
        rule=r.rule,
        severity=r.severity,
        status=r.status,
        user=r.user_name,
        agent_id=r.agent_id,
        created_at_ns=r.created_at_ns,
        updated_at_ns=r.updated_at_ns,
        event_ids=tuple(json.loads(r.event_ids)),
        summary=r.summary,
        last_event_ns=r.last_event_ns,
        id=r.id,
    )


def _replace_id(alert: Alert, new_id: int) -> Alert:
    from dataclasses import replace

    return replace(alert, id=new_id)


def _user_from(r: Any) -> User:
    return User(r.username, r.role, r.password_hash, r.created_at_ns, bool(r.disabled))


def _raw_bytes(value: Any) -> bytes:
    # A column changed behind our back may hold text or NULL; the verifier must see it, not crash.
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, int):
        return str(value).encode()
    return bytes(value)


def _batch_row_from(r: Any) -> BatchRow:
    return BatchRow(
        r.row_id,
        StoredBatch(
            r.agent_id,
            r.epoch,
            r.first_seq,
            r.last_seq,
            _raw_bytes(r.batch_hash),
            _raw_bytes(r.prev_hash),
            _raw_bytes(r.signature),
            _raw_bytes(r.canonical),
            r.received_at_ns,
        ),
    )


def _tree_head_from(r: Any) -> SignedTreeHead:
    return SignedTreeHead(
        r.tree_size, _raw_bytes(r.root_hash), r.timestamp_ns, _raw_bytes(r.key_id), _raw_bytes(r.signature)
    )
