"""People who use the collector: users with one role each, passwords, API and session tokens.

Every change here is a human action and goes to the audit log. Errors::

    PeopleError
     ├── BadRequest        (an invalid user name, role or password)
     └── NotAuthenticated  (wrong password, unknown or expired token)
"""

from __future__ import annotations

import re
import threading
import time
from typing import Callable, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from collector.audit.models import AuditEntry
from collector.domain.roles import ROLES
from collector.people.models import User
from collector.secrets import new_secret, secret_hash
from collector.storage.base import AlreadyExists, AuditArea, PeopleArea

__all__ = ["PeopleError", "BadRequest", "NotAuthenticated", "PeopleService"]

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
# A fixed hash to verify against when the user does not exist, so timing does not tell.
_DUMMY = PasswordHasher().hash("shoumi-no-such-user")


class PeopleError(Exception):
    """Base of the errors of this module."""


class BadRequest(PeopleError):
    """The request itself is invalid."""


class NotAuthenticated(PeopleError):
    """The credentials do not identify an enabled user."""


class PeopleTx(PeopleArea, AuditArea, Protocol):
    """What changes to people need: their tables and the audit log, in one transaction."""


class PeopleService:
    """Users, roles and tokens. Every method works inside the caller's transaction."""

    def __init__(self, *, session_ttl_ns: int, clock: Callable[[], int] = time.time_ns,
                 concurrent_password_checks: int = 4) -> None:
        self.session_ttl_ns = session_ttl_ns
        self.clock = clock
        self.hasher = PasswordHasher()
        # argon2 takes 64 MiB per check: a flood of sign-ins waits here instead of exhausting memory
        self._checks = threading.BoundedSemaphore(concurrent_password_checks)

    def create_user(self, *, tx: PeopleTx, username: str, role: str, password: str | None, actor: str) -> User:
        """Creates a user with one role; without a password the user can use API tokens only."""
        if not _USERNAME.match(username):
            raise BadRequest(f"invalid user name {username!r}: letters, digits and . _ @ - (at most 128)")
        if role not in ROLES:
            raise BadRequest(f"unknown role {role!r}; roles are {', '.join(sorted(ROLES))}")
        if password is not None and len(password) < 12:
            raise BadRequest("a password needs at least 12 characters")
        user = User(
            username=username,
            role=role,
            password_hash=None if password is None else self.hasher.hash(password),
            created_at_ns=self.clock(),
        )
        try:
            tx.add_user(user)
        except AlreadyExists as exc:
            raise BadRequest(str(exc)) from exc
        tx.append_audit(AuditEntry(user.created_at_ns, actor, "user.create", username, {"role": role}))
        return user

    def create_api_token(self, *, tx: PeopleTx, username: str, actor: str) -> str:
        """Creates a bearer token for a user and returns it (only its hash is kept)."""
        if tx.get_user(username) is None:
            raise BadRequest(f"no user {username!r}")
        token = new_secret("sa")
        now = self.clock()
        tx.add_token(token_hash=secret_hash(token), username=username, kind="api", created_at_ns=now, expires_at_ns=None)
        tx.append_audit(AuditEntry(now, actor, "api_token.create", username, {"token": secret_hash(token)[:12]}))
        return token

    def login(self, *, tx: PeopleTx, username: str, password: str, peer: str) -> str:
        """Checks a password and returns a new session token."""
        user = tx.get_user(username)
        now = self.clock()
        ok = False
        try:
            with self._checks:
                ok = self.hasher.verify(user.password_hash if user and user.password_hash else _DUMMY, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or user is None or user.password_hash is None or user.disabled:
            tx.append_audit(AuditEntry(now, f"peer:{peer}", "login.failed", username[:128], {}))
            raise NotAuthenticated("wrong user name or password")
        token = new_secret("ss")
        tx.add_token(
            token_hash=secret_hash(token), username=username, kind="session", created_at_ns=now,
            expires_at_ns=now + self.session_ttl_ns,
        )
        tx.append_audit(AuditEntry(now, username, "login", username, {"peer": peer}))
        return token

    def logout(self, *, tx: PeopleTx, token: str, username: str) -> None:
        """Ends a session."""
        tx.revoke_token(token_hash=secret_hash(token))
        tx.append_audit(AuditEntry(self.clock(), username, "logout", username, {}))

    def authenticate(self, *, tx: PeopleArea, token: str, kind: str) -> User:
        """Returns the user a bearer ('api') or session token belongs to."""
        user = tx.user_for_token(token_hash=secret_hash(token), kind=kind, now_ns=self.clock())
        if user is None:
            raise NotAuthenticated("invalid or expired token")
        return user
