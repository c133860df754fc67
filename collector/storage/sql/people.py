"""SQL for users, their tokens, login throttling, service keys, and the hash-chained audit log.

Appending to the audit log locks the one row of ``audit_head`` (SELECT ... FOR UPDATE on
PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers) until the transaction ends, so
two collectors on one database append one after the other and never fork the chain: each row's
``prev_hash`` is the head's hash, its id is taken while the lock is held, and the head moves in the
same transaction.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.audit.models import GENESIS, AuditEntry, AuditFilter, AuditHead, AuditRow, audit_row_hash, canonical_details
from collector.domain.records import Page
from collector.people.models import SsoPending, ThrottleState, User, UserToken
from collector.storage.base import AlreadyExists
from collector.storage.sql.schema import audit_head, audit_log, login_throttle, service_keys, sso_pending, tokens, users

__all__ = ["PeopleSql"]


class PeopleSql:
    """People and audit areas."""

    _conn: Connection

    # --- people -------------------------------------------------------------------------------
    def add_user(self, user: User) -> None:
        """Stores a new user."""
        try:
            with self._conn.begin_nested():
                self._conn.execute(users.insert().values(
                    username=user.username, role=user.role, password_hash=user.password_hash,
                    created_at_ns=user.created_at_ns, disabled=user.disabled, lang=user.lang,
                    provider=user.provider, subject=user.subject))
        except IntegrityError as exc:
            raise AlreadyExists(f"user {user.username!r} exists") from exc

    def get_user(self, username: str) -> User | None:
        """Gets a user by name."""
        row = self._conn.execute(sa.select(users).where(users.c.username == username)).first()
        return None if row is None else _user_from(row)

    def list_users(self) -> Sequence[User]:
        """Every user, by name."""
        return [_user_from(r) for r in self._conn.execute(sa.select(users).order_by(users.c.username)).all()]

    def update_user(self, user: User) -> None:
        """Replaces the stored user of that name."""
        self._conn.execute(users.update().where(users.c.username == user.username).values(
            role=user.role, password_hash=user.password_hash, disabled=user.disabled, lang=user.lang))

    def get_user_by_subject(self, *, provider: str, subject: str) -> User | None:
        """The user a provider knows by ``subject``."""
        row = self._conn.execute(sa.select(users).where(users.c.provider == provider,
                                                        users.c.subject == subject)).first()
        return None if row is None else _user_from(row)

    def add_sso_pending(self, pending: SsoPending) -> None:
        """Stores a pending provider sign-in."""
        self._conn.execute(sso_pending.insert().values(
            state_hash=pending.state_hash, provider=pending.provider, nonce=pending.nonce, verifier=pending.verifier,
            next_path=pending.next_path, created_at_ns=pending.created_at_ns))

    def take_sso_pending(self, *, state_hash: str) -> SsoPending | None:
        """Removes and returns a pending provider sign-in (DELETE ... RETURNING: two takes never both get it)."""
        row = self._conn.execute(sso_pending.delete().where(sso_pending.c.state_hash == state_hash)
                                 .returning(*sso_pending.c)).first()
        return None if row is None else SsoPending(row.state_hash, row.provider, row.nonce, row.verifier,
                                                    row.next_path, row.created_at_ns)

    def delete_sso_pending_before(self, *, before_ns: int) -> int:
        """Forgets old pending sign-ins."""
        return int(self._conn.execute(sso_pending.delete().where(sso_pending.c.created_at_ns < before_ns)).rowcount)

    def add_token(self, *, token_hash: str, username: str, kind: str, created_at_ns: int, expires_at_ns: int | None,
                  name: str | None = None) -> None:
        """Stores a bearer or session token's hash for a user."""
        self._conn.execute(tokens.insert().values(token_hash=token_hash, username=username, kind=kind, name=name,
                                                  created_at_ns=created_at_ns, expires_at_ns=expires_at_ns, revoked=False))

    def get_token(self, *, token_hash: str) -> UserToken | None:
        """Gets a token by the hash of its secret."""
        row = self._conn.execute(sa.select(tokens).where(tokens.c.token_hash == token_hash)).first()
        return None if row is None else _token_from(row)

    def user_for_token(self, *, token_hash: str, kind: str, now_ns: int) -> User | None:
        """Gets the enabled user a valid, unexpired token of that kind belongs to."""
        query = (sa.select(users).join(tokens, tokens.c.username == users.c.username)
                 .where(tokens.c.token_hash == token_hash, tokens.c.kind == kind, tokens.c.revoked.is_(False),
                        sa.or_(tokens.c.expires_at_ns.is_(None), tokens.c.expires_at_ns > now_ns),
                        users.c.disabled.is_(False)))
        row = self._conn.execute(query).first()
        return None if row is None else _user_from(row)

    def touch_token(self, *, token_hash: str, now_ns: int) -> None:
        """Records a token's use."""
        self._conn.execute(tokens.update().where(tokens.c.token_hash == token_hash).values(last_used_ns=now_ns))

    def list_tokens(self, *, username: str, kind: str) -> Sequence[UserToken]:
        """A user's tokens of one kind, newest first."""
        query = (sa.select(tokens).where(tokens.c.username == username, tokens.c.kind == kind)
                 .order_by(tokens.c.created_at_ns.desc(), tokens.c.token_hash))
        return [_token_from(r) for r in self._conn.execute(query).all()]

    def revoke_token(self, *, token_hash: str) -> None:
        """Revokes a token."""
        self._conn.execute(tokens.update().where(tokens.c.token_hash == token_hash).values(revoked=True))

    def revoke_user_tokens(self, *, username: str, kind: str | None = None, keep: str | None = None) -> int:
        """Revokes a user's tokens except ``keep``; returns how many."""
        query = tokens.update().where(tokens.c.username == username, tokens.c.revoked.is_(False))
        if kind is not None:
            query = query.where(tokens.c.kind == kind)
        if keep is not None:
            query = query.where(tokens.c.token_hash != keep)
        return int(self._conn.execute(query.values(revoked=True)).rowcount or 0)

    def get_throttle(self, *, scope: str, key: str) -> ThrottleState | None:
        """The failures counted under a key, locked until the transaction ends."""
        t = login_throttle.c
        row = self._conn.execute(sa.select(login_throttle).where(t.scope == scope, t.key == key).with_for_update()).first()
        if row is None:
            return None
        return ThrottleState(row.scope, row.key, row.failures, row.window_start_ns, row.locked_until_ns, row.lockouts)

    def put_throttle(self, state: ThrottleState) -> None:
        """Stores the failures counted under a key."""
        t = login_throttle.c
        values = dict(failures=state.failures, window_start_ns=state.window_start_ns,
                      locked_until_ns=state.locked_until_ns, lockouts=state.lockouts)
        update = login_throttle.update().where(t.scope == state.scope, t.key == state.key).values(**values)
        if self._conn.execute(update).rowcount:
            return
        try:
            with self._conn.begin_nested():
                self._conn.execute(login_throttle.insert().values(scope=state.scope, key=state.key, **values))
        except IntegrityError:  # another collector inserted it meanwhile: ours is the newer count
            self._conn.execute(update)

    def delete_throttle(self, *, scope: str, key: str) -> None:
        """Forgets a key's failures."""
        t = login_throttle.c
        self._conn.execute(login_throttle.delete().where(t.scope == scope, t.key == key))

    def get_service_key(self, *, name: str) -> bytes | None:
        """A stored key, or None."""
        row = self._conn.execute(sa.select(service_keys.c.secret).where(service_keys.c.name == name)).first()
        return None if row is None else bytes(row[0])

    def ensure_service_key(self, *, name: str, secret: bytes) -> bytes:
        """Stores a key unless one is there; returns the stored one."""
        found = self.get_service_key(name=name)
        if found is not None:
            return found
        try:
            with self._conn.begin_nested():
                self._conn.execute(service_keys.insert().values(name=name, secret=secret))
            return secret
        except IntegrityError:  # another collector made it first: use theirs
            stored = self.get_service_key(name=name)
            assert stored is not None
            return stored

    # --- audit --------------------------------------------------------------------------------
    def append_audit(self, entry: AuditEntry) -> None:
        """Appends one entry after the chain's head, locking the head until the transaction ends."""
        h = audit_head.c
        head = self._conn.execute(sa.select(audit_head).where(h.id == 1).with_for_update()).first()
        prev = head.last_hash if head is not None else GENESIS
        details = canonical_details(entry.details)
        row_hash = audit_row_hash(prev, entry.at_ns, entry.actor, entry.action, entry.target, details)
        result = self._conn.execute(audit_log.insert().values(
            at_ns=entry.at_ns, actor=entry.actor, action=entry.action, target=entry.target, details=details,
            prev_hash=prev, row_hash=row_hash))
        assert result.inserted_primary_key is not None
        new_id = int(result.inserted_primary_key[0])
        if head is None:  # a store whose head row was lost: start it again (verify names the gap)
            self._conn.execute(audit_head.insert().values(id=1, last_id=new_id, last_hash=row_hash, count=1))
        else:
            self._conn.execute(audit_head.update().where(h.id == 1).values(
                last_id=new_id, last_hash=row_hash, count=h["count"] + 1))

    def list_audit(self, *, cursor: int | None, limit: int, filter: AuditFilter | None = None,
                   oldest_first: bool = False) -> Page:
        """Entries matching the filter, newest first (or oldest first), a page at a time."""
        a = audit_log.c
        query = sa.select(audit_log).order_by(a.id if oldest_first else a.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(a.id > cursor if oldest_first else a.id < cursor)
        f = filter or AuditFilter()
        for column, value in ((a.actor, f.actor), (a.action, f.action), (a.target, f.target)):
            if value is not None:
                query = query.where(column == value)
        if f.since_ns is not None:
            query = query.where(a.at_ns >= f.since_ns)
        if f.until_ns is not None:
            query = query.where(a.at_ns < f.until_ns)
        rows = self._conn.execute(query).all()
        items = tuple(AuditEntry(r.at_ns, r.actor, r.action, r.target, json.loads(r.details), r.id, r.prev_hash,
                                 r.row_hash) for r in rows[:limit])
        return Page(items, str(items[-1].id) if len(rows) > limit and items else None)

    def audit_rows(self, *, after_id: int, limit: int) -> Sequence[AuditRow]:
        """Rows in id order after ``after_id``, every column as stored."""
        a = audit_log.c
        query = (sa.select(a.id, a.at_ns, a.actor, a.action, a.target, a.details, a.prev_hash, a.row_hash)
                 .where(a.id > after_id).order_by(a.id).limit(limit))
        return [AuditRow(*r) for r in self._conn.execute(query).all()]

    def audit_head(self) -> AuditHead | None:
        """The chain's end as recorded."""
        row = self._conn.execute(sa.select(audit_head).where(audit_head.c.id == 1)).first()
        if row is None or row._mapping["count"] == 0:
            return None
        return AuditHead(row.last_id, row.last_hash, row._mapping["count"])


def _user_from(r: Any) -> User:
    return User(r.username, r.role, r.password_hash, r.created_at_ns, bool(r.disabled), r.lang, r.provider, r.subject)


def _token_from(r: Any) -> UserToken:
    return UserToken(r.token_hash, r.username, r.kind, r.created_at_ns, r.expires_at_ns, bool(r.revoked), r.name,
                     r.last_used_ns)
