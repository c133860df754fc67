"""SQL for users and their tokens, and the audit log."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from collector.audit.models import AuditEntry
from collector.domain.records import Page
from collector.people.models import User
from collector.storage.base import AlreadyExists
from collector.storage.sql.schema import audit_log, tokens, users

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
                    created_at_ns=user.created_at_ns, disabled=user.disabled))
        except IntegrityError as exc:
            raise AlreadyExists(f"user {user.username!r} exists") from exc

    def get_user(self, username: str) -> User | None:
        """Gets a user by name."""
        row = self._conn.execute(sa.select(users).where(users.c.username == username)).first()
        return None if row is None else _user_from(row)

    def add_token(self, *, token_hash: str, username: str, kind: str, created_at_ns: int, expires_at_ns: int | None) -> None:
        """Stores a bearer or session token's hash for a user."""
        self._conn.execute(tokens.insert().values(token_hash=token_hash, username=username, kind=kind,
                                                  created_at_ns=created_at_ns, expires_at_ns=expires_at_ns, revoked=False))

    def user_for_token(self, *, token_hash: str, kind: str, now_ns: int) -> User | None:
        """Gets the enabled user a valid, unexpired token of that kind belongs to."""
        query = (sa.select(users).join(tokens, tokens.c.username == users.c.username)
                 .where(tokens.c.token_hash == token_hash, tokens.c.kind == kind, tokens.c.revoked.is_(False),
                        sa.or_(tokens.c.expires_at_ns.is_(None), tokens.c.expires_at_ns > now_ns),
                        users.c.disabled.is_(False)))
        row = self._conn.execute(query).first()
        return None if row is None else _user_from(row)

    def revoke_token(self, *, token_hash: str) -> None:
        """Revokes a token."""
        self._conn.execute(tokens.update().where(tokens.c.token_hash == token_hash).values(revoked=True))

    # --- audit --------------------------------------------------------------------------------
    def append_audit(self, entry: AuditEntry) -> None:
        """Appends one entry to the audit log."""
        self._conn.execute(audit_log.insert().values(
            at_ns=entry.at_ns, actor=entry.actor, action=entry.action, target=entry.target,
            details=json.dumps(dict(entry.details), sort_keys=True, ensure_ascii=False)))

    def list_audit(self, *, cursor: int | None, limit: int) -> Page:
        """Lists audit entries, newest first."""
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(audit_log.c.id < cursor)
        rows = self._conn.execute(query).all()
        items = tuple(AuditEntry(r.at_ns, r.actor, r.action, r.target, json.loads(r.details), r.id) for r in rows[:limit])
        return Page(items, str(items[-1].id) if len(rows) > limit and items else None)


def _user_from(r: Any) -> User:
    return User(r.username, r.role, r.password_hash, r.created_at_ns, bool(r.disabled))
