"""People who use the collector: users with one role each, passwords, API and session tokens, sign-in.

Every change here is a human action and goes to the audit log in the same transaction. Signing in
is the one flow that spans transactions on purpose (``sign_in``): the argon2 check (64 MiB, tens of
milliseconds) runs outside any transaction, so no database lock is held while it waits or works,
and at most ``concurrent_password_checks`` run at once; a caller that waits longer than
``password_check_wait_s`` for a slot gets ``Busy`` (503, retry) instead of queuing without bound.
Errors::

    PeopleError
     ├── BadRequest        (an invalid user name, role, password, language or token request)
     ├── NotFound          (no such user or token)
     ├── NotAuthenticated  (wrong password, unknown, expired or revoked token, disabled user)
     ├── Throttled         (too many failed sign-ins: ``retry_after_s``)
     └── Busy              (every password-check slot is taken: retry shortly)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Protocol, Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from collector.audit.models import AuditEntry
from collector.domain.roles import ROLES
from collector.people.models import LANGS, ThrottleState, User, UserToken
from collector.people.throttle import KNOWN_FOR_NS, KNOWN_SCOPE, RULES, after_failure, remaining_ns
from collector.secrets import new_secret, secret_hash
from collector.storage.base import AlreadyExists, AuditArea, PeopleArea, Store

__all__ = ["PeopleError", "BadRequest", "NotFound", "NotAuthenticated", "Throttled", "Busy", "PeopleService",
           "SignIn", "DAY_NS", "MAX_TOKEN_DAYS", "DEFAULT_TOKEN_DAYS"]

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
DAY_NS = 86_400 * 10**9
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 365
_TOUCH_EVERY_NS = 60 * 10**9  # a token's last use is written at most once a minute
_KEY_NAME = "people.v1"


class PeopleError(Exception):
    """Base of the errors of this module."""


class BadRequest(PeopleError):
    """The request itself is invalid."""


class NotFound(PeopleError):
    """No such user or token."""


class NotAuthenticated(PeopleError):
    """The credentials do not identify an enabled user."""


class Throttled(PeopleError):
    """Too many failed sign-ins for this account or address; try again later."""

    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        self.minutes = max(1, math.ceil(retry_after_s / 60))
        super().__init__(f"too many failed sign-ins, try again in {self.minutes} minutes")


class Busy(PeopleError):
    """Every password-check slot is taken."""

    def __init__(self) -> None:
        super().__init__("busy, retry in a few seconds")


def _address(peer: str) -> str:
    """What the throttle counts as one address: an IPv4 address, or an IPv6 /64 (one subscriber's, usually)."""
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class PeopleTx(PeopleArea, AuditArea, Protocol):
    """What changes to people need: their tables and the audit log, in one transaction."""


@dataclass(frozen=True)
class SignIn:
    """A successful sign-in: the new session's secret and its user."""

    token: str
    user: User


class PeopleService:
    """Users, roles, tokens and sign-in. Methods taking ``tx`` work inside the caller's transaction."""

    def __init__(self, *, session_ttl_ns: int, clock: Callable[[], int] = time.time_ns,
                 concurrent_password_checks: int = 4, session_idle_ns: int = 30 * 60 * 10**9,
                 password_check_wait_s: float = 2.0, hasher: PasswordHasher | None = None) -> None:
        self.session_ttl_ns = session_ttl_ns
        self.session_idle_ns = session_idle_ns
        self.clock = clock
        self.hasher = hasher or PasswordHasher()  # argon2id, 64 MiB, as argon2-cffi recommends
        # a hash to verify against when the user does not exist, with the same cost, so timing does not tell
        self._dummy = self.hasher.hash("shoumi-no-such-user")
        self.password_check_wait_s = password_check_wait_s
        self.concurrent_password_checks = concurrent_password_checks
        # argon2 takes 64 MiB per check: a flood of sign-ins waits here, a bounded time, instead of exhausting memory
        self._checks = threading.BoundedSemaphore(concurrent_password_checks)
        self._gauge = threading.Lock()
        self.checks_running = 0
        self.checks_peak = 0
        self.checks_refused = 0

    # --- password checks, bounded ---------------------------------------------------------------
    @contextmanager
    def _check_slot(self) -> Iterator[None]:
        if not self._checks.acquire(timeout=self.password_check_wait_s):
            with self._gauge:
                self.checks_refused += 1
            raise Busy()
        with self._gauge:
            self.checks_running += 1
            self.checks_peak = max(self.checks_peak, self.checks_running)
        try:
            yield
        finally:
            with self._gauge:
                self.checks_running -= 1
            self._checks.release()

    def _hash(self, password: str) -> str:
        if not 12 <= len(password) <= 1024:
            raise BadRequest("a password needs at least 12 characters (at most 1024)")
        with self._check_slot():
            return self.hasher.hash(password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        with self._check_slot():
            try:
                return bool(self.hasher.verify(password_hash or self._dummy, password)) and password_hash is not None
            except (VerificationError, InvalidHashError):
                return False

    # --- users -----------------------------------------------------------------------------------
    def create_user(self, *, tx: PeopleTx, username: str, role: str, password: str | None, actor: str,
                    lang: str = "zh") -> User:
        """Creates a user with one role; without a password the user can use API tokens only."""
        if not _USERNAME.match(username):
            raise BadRequest(f"invalid user name {username!r}: letters, digits and . _ @ - (at most 128)")
        if role not in ROLES:
            raise BadRequest(f"unknown role {role!r}; roles are {', '.join(sorted(ROLES))}")
        if lang not in LANGS:
            raise BadRequest(f"unknown language {lang!r}; languages are {', '.join(LANGS)}")
        user = User(username=username, role=role, password_hash=None if password is None else self._hash(password),
                    created_at_ns=self.clock(), lang=lang)
        try:
            tx.add_user(user)
        except AlreadyExists as exc:
            raise BadRequest(str(exc)) from exc
        tx.append_audit(AuditEntry(user.created_at_ns, actor, "user.create", username,
                                   {"role": role, "password": password is not None}))
        return user

    def get_user(self, *, tx: PeopleArea, username: str) -> User:
        """Gets a user by name."""
        user = tx.get_user(username) if _USERNAME.match(username) else None
        if user is None:
            raise NotFound(f"no user {username!r}")
        return user

    def set_disabled(self, *, tx: PeopleTx, username: str, disabled: bool, actor: str) -> User:
        """Disables a user (every session and token stops at once, and is revoked) or enables it again."""
        user = self.get_user(tx=tx, username=username)
        if disabled and username == actor:
            raise BadRequest("you cannot disable your own account")
        if disabled and user.role == "it_admin" and not user.disabled and not any(
                u.role == "it_admin" and not u.disabled and u.username != username for u in tx.list_users()):
            raise BadRequest("the last enabled it_admin cannot be disabled")
        if user.disabled == disabled:
            return user
        changed = replace(user, disabled=disabled)
        tx.update_user(changed)
        revoked = tx.revoke_user_tokens(username=username) if disabled else 0
        tx.append_audit(AuditEntry(self.clock(), actor, "user.disable" if disabled else "user.enable", username,
                                   {"before": {"disabled": user.disabled}, "after": {"disabled": disabled},
                                    "tokens_revoked": revoked}))
        return changed

    def reset_password(self, *, tx: PeopleTx, username: str, password: str, actor: str) -> User:
        """Sets a new password for a user (an administrator's reset); their sessions end."""
        user = self.get_user(tx=tx, username=username)
        changed = replace(user, password_hash=self._hash(password))
        tx.update_user(changed)
        ended = tx.revoke_user_tokens(username=username, kind="session")
        tx.append_audit(AuditEntry(self.clock(), actor, "user.password_reset", username,
                                   {"before": {"password": user.password_hash is not None},
                                    "after": {"password": True}, "sessions_ended": ended}))
        return changed

    def change_password(self, *, store: Store, username: str, current: str, new: str, peer: str,
                        keep_session: str | None) -> None:
        """A user changes their own password with the current one; their other sessions end.

        The current password is checked outside any transaction (bounded, as at sign-in), and a
        wrong one counts as a failed sign-in from this address.
        """
        if not 12 <= len(new) <= 1024:
            raise BadRequest("a password needs at least 12 characters (at most 1024)")
        key = self._key(store)
        with store.read() as tx:
            user = self.get_user(tx=tx, username=username)
            self._refuse_if_locked(tx, key, username, peer)
        ok = self._verify(user.password_hash, current)
        new_hash = self._hash(new) if ok else None
        with store.transaction() as wtx:
            if not ok or new_hash is None:
                self._count_failure(wtx, key, username, peer, action="password.change_failed")
            else:
                wtx.update_user(replace(user, password_hash=new_hash))
                ended = wtx.revoke_user_tokens(username=username, kind="session",
                                               keep=None if keep_session is None else secret_hash(keep_session))
                wtx.append_audit(AuditEntry(self.clock(), username, "user.password_change", username,
                                            {"peer": peer[:64], "sessions_ended": ended}))
        if not ok:
            raise NotAuthenticated("the current password is wrong")

    def set_lang(self, *, tx: PeopleTx, username: str, lang: str) -> User:
        """Stores the language a user reads the pages in."""
        if lang not in LANGS:
            raise BadRequest(f"unknown language {lang!r}; languages are {', '.join(LANGS)}")
        user = self.get_user(tx=tx, username=username)
        if user.lang != lang:
            tx.update_user(replace(user, lang=lang))
            tx.append_audit(AuditEntry(self.clock(), username, "user.lang", username,
                                       {"before": {"lang": user.lang}, "after": {"lang": lang}}))
        return replace(user, lang=lang)

    # --- API tokens ------------------------------------------------------------------------------
    def issue_api_token(self, *, tx: PeopleTx, username: str, actor: str, name: str | None = None,
                        days: int | None = None) -> tuple[str, UserToken]:
        """Creates a named bearer token that expires (90 days unless said, at most 365); the secret is returned once."""
        user = self.get_user(tx=tx, username=username)
        days = DEFAULT_TOKEN_DAYS if days is None else days
        if not 1 <= days <= MAX_TOKEN_DAYS:
            raise BadRequest(f"a token lasts 1 to {MAX_TOKEN_DAYS} days, not {days}")
        name = (name or "").strip() or None
        if name is not None and (len(name) > 100 or not name.isprintable()):
            raise BadRequest("a token name is at most 100 printable characters")
        token = new_secret("sa")
        now = self.clock()
        row = UserToken(secret_hash(token), user.username, "api", now, now + days * DAY_NS, False, name)
        tx.add_token(token_hash=row.token_hash, username=row.username, kind="api", created_at_ns=now,
                     expires_at_ns=row.expires_at_ns, name=name)
        tx.append_audit(AuditEntry(now, actor, "api_token.create", username,
                                   {"token": row.id, "name": name, "days": days}))
        return token, row

    def create_api_token(self, *, tx: PeopleTx, username: str, actor: str, name: str | None = None,
                         days: int | None = None) -> str:
        """Creates a bearer token for a user and returns it (only its hash is kept)."""
        return self.issue_api_token(tx=tx, username=username, actor=actor, name=name, days=days)[0]

    def list_api_tokens(self, *, tx: PeopleArea, username: str) -> Sequence[UserToken]:
        """A user's API tokens, newest first (never their secrets)."""
        return tx.list_tokens(username=username, kind="api")

    def revoke_api_token(self, *, tx: PeopleTx, username: str, token_id: str, actor: str) -> UserToken:
        """Revokes one of a user's API tokens by its id."""
        found = [t for t in tx.list_tokens(username=username, kind="api") if t.id == token_id]
        if not found:
            raise NotFound(f"no API token {token_id!r} of {username!r}")
        token = found[0]
        if not token.revoked:
            tx.revoke_token(token_hash=token.token_hash)
            tx.append_audit(AuditEntry(self.clock(), actor, "api_token.revoke", username,
                                       {"token": token.id, "name": token.name}))
        return replace(token, revoked=True)

    # --- sign-in ---------------------------------------------------------------------------------
    def sign_in(self, *, store: Store, username: str, password: str, peer: str,
                old_session: str | None = None) -> SignIn:
        """Checks a password under the throttle and returns a new session (the old one, if any, is revoked).

        Three steps: a read (throttle, the user's hash), the bounded argon2 check outside any
        transaction, a write (count or clear, the session, the audit row). The throttle is read
        again under lock in the write, so concurrent guesses cannot slip past a lock set meanwhile.
        """
        key = self._key(store)
        with store.read() as tx:
            self._refuse_if_locked(tx, key, username, peer)
            # a name no account can have is not looked up (PostgreSQL refuses NUL in text, for one)
            user = tx.get_user(username) if _USERNAME.match(username) else None
        ok = self._verify(user.password_hash if user else None, password)
        ok = ok and user is not None and not user.disabled
        now = self.clock()
        token = new_secret("ss")
        with store.transaction() as tx:
            try:
                self._refuse_if_locked(tx, key, username, peer)
            except Throttled as exc:
                refused: Throttled | None = exc
            else:
                refused = None
            if refused is None and not ok:
                self._count_failure(tx, key, username, peer, action="login.failed")
            if refused is None and ok:
                assert user is not None
                if old_session:
                    tx.revoke_token(token_hash=secret_hash(old_session))
                tx.delete_throttle(scope="pair", key=self._pair_key(key, username, peer))
                tx.put_throttle(ThrottleState(KNOWN_SCOPE, self._pair_key(key, username, peer), 0, now))
                tx.add_token(token_hash=secret_hash(token), username=user.username, kind="session", created_at_ns=now,
                             expires_at_ns=now + self.session_ttl_ns)
                tx.append_audit(AuditEntry(now, user.username, "login", user.username, {"peer": peer[:64]}))
        if refused is not None:
            raise refused
        if not ok or user is None:
            raise NotAuthenticated("wrong user name or password")
        return SignIn(token, user)

    def login(self, *, store: Store, username: str, password: str, peer: str) -> str:
        """Signs in and returns the new session's secret."""
        return self.sign_in(store=store, username=username, password=password, peer=peer).token

    def logout(self, *, tx: PeopleTx, token: str, username: str) -> None:
        """Ends a session."""
        tx.revoke_token(token_hash=secret_hash(token))
        tx.append_audit(AuditEntry(self.clock(), username, "logout", username, {}))

    def authenticate(self, *, tx: PeopleArea, token: str, kind: str) -> User:
        """Returns the user a bearer ('api') or session token belongs to."""
        return self.authenticate_token(tx=tx, token=token, kind=kind)[0]

    def authenticate_token(self, *, tx: PeopleArea, token: str, kind: str) -> tuple[User, UserToken]:
        """The user and the stored token: unrevoked, unexpired, not idle too long (sessions), user enabled."""
        row = tx.get_token(token_hash=secret_hash(token))
        now = self.clock()
        if row is None or row.kind != kind or row.revoked or (row.expires_at_ns is not None and row.expires_at_ns <= now):
            raise NotAuthenticated("invalid or expired token")
        if kind == "session" and (row.last_used_ns or row.created_at_ns) + self.session_idle_ns <= now:
            raise NotAuthenticated("the session was idle too long: sign in again")
        user = tx.get_user(row.username)
        if user is None or user.disabled:
            raise NotAuthenticated("invalid or expired token")
        return user, row

    def touch_due(self, row: UserToken) -> bool:
        """Whether a token's last use is old enough to be written again (at most once a minute)."""
        return (row.last_used_ns or row.created_at_ns) + _TOUCH_EVERY_NS <= self.clock()

    def touch(self, *, tx: PeopleArea, row: UserToken) -> None:
        """Records that a token was just used (keeps a session from idling out)."""
        tx.touch_token(token_hash=row.token_hash, now_ns=self.clock())

    # --- throttling ------------------------------------------------------------------------------
    def _key(self, store: Store) -> bytes:
        with store.read() as tx:
            found = tx.get_service_key(name=_KEY_NAME)
        if found is not None:
            return found
        with store.transaction() as wtx:
            return wtx.ensure_service_key(name=_KEY_NAME, secret=os.urandom(32))

    @staticmethod
    def _keyed(key: bytes, what: str, text: str) -> str:
        return hmac.new(key, f"{what}\0{text}".encode("utf-8", "replace"), hashlib.sha256).hexdigest()

    def _pair_key(self, key: bytes, username: str, peer: str) -> str:
        return self._keyed(key, "pair", f"{username}\0{_address(peer)}")[:64]

    def _keys(self, key: bytes, username: str, peer: str) -> dict[str, str]:
        return {"pair": self._pair_key(key, username, peer), "account": self._keyed(key, "account", username)[:64],
                "address": self._keyed(key, "address", _address(peer))[:64]}

    def _refuse_if_locked(self, tx: PeopleArea, key: bytes, username: str, peer: str) -> None:
        now = self.clock()
        keys = self._keys(key, username, peer)
        waits: dict[str, int] = {}
        for rule in RULES:
            waits[rule.scope] = remaining_ns(tx.get_throttle(scope=rule.scope, key=keys[rule.scope]), now)
        if waits["account"]:
            known = tx.get_throttle(scope=KNOWN_SCOPE, key=keys["pair"])
            if known is not None and now - known.window_start_ns < KNOWN_FOR_NS:
                waits["account"] = 0  # the owner's usual address is not locked out by others' guessing
        wait = max(waits.values())
        if wait:
            raise Throttled(math.ceil(wait / 10**9))

    def _count_failure(self, tx: PeopleTx, key: bytes, username: str, peer: str, *, action: str) -> None:
        now = self.clock()
        keys = self._keys(key, username, peer)
        user = tx.get_user(username) if _USERNAME.match(username) else None
        target = user.username if user is not None else f"unknown user #{self._keyed(key, 'name', username)[:10]}"
        entries = [AuditEntry(now, f"peer:{peer[:64]}", action, target, {})]
        for rule in RULES:  # the throttle rows first, the audit head last: one lock order everywhere
            before = tx.get_throttle(scope=rule.scope, key=keys[rule.scope])
            after = after_failure(rule, before, key=keys[rule.scope], now_ns=now)
            tx.put_throttle(after)
            if after.locked_until_ns > now and (before is None or before.locked_until_ns < after.locked_until_ns):
                minutes = math.ceil((after.locked_until_ns - now) / 60e9)
                entries.append(AuditEntry(now, f"peer:{peer[:64]}", "login.locked", target,
                                          {"scope": rule.scope, "minutes": minutes, "lockouts": after.lockouts}))
        for entry in entries:
            tx.append_audit(entry)
