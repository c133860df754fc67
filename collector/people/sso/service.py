"""What every provider's sign-in shares: the settings read at start, roles from groups, the user, the session, the audit.

Roles, decided once for every provider (docs/sso.md):

* a provider with a ``role_map`` is the authority: at each sign-in the user's role becomes the role of
  the first entry of the map that one of their groups matches; a person whose groups match none is
  refused (and their sessions end), so taking someone out of the group at the provider takes them out
  of the collector at their next sign-in, at most ``sso.session_minutes`` later;
* a provider without a ``role_map`` (WeCom always: its login says who, not which groups) leaves the
  role to the collector: a new person is created without a role and told to ask IT, and an it_admin
  grants one (``POST /api/v1/users/{name}/role``); it is kept across sign-ins.

Sessions of such users are the collector's sessions, ending ``sso.session_minutes`` after sign-in
(or earlier, by the usual idle and session limits); there is no refresh token: the next sign-in goes
to the provider again, which refuses a person it no longer knows.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from pydantic import SecretStr

from collector.audit.models import AuditEntry
from collector.domain.roles import ROLES
from collector.people.models import NO_ROLE, SsoPending, User
from collector.people.service import BadRequest, NotFound, PeopleService, PeopleTx, SignIn
from collector.people.sso import NoRole, SignInRefused, SsoConfigError
from collector.secrets import new_secret, secret_hash
from collector.settings import SsoSettings
from collector.storage.base import AlreadyExists, Store

if TYPE_CHECKING:
    from collector.people.sso.ldap import LdapDirectory
    from collector.people.sso.oidc import OidcProvider
    from collector.people.sso.wecom_login import WeComLogin

__all__ = ["SsoConfig", "load_sso", "role_for", "start_pending", "take_pending", "complete_sign_in",
           "audit_refusal", "grant_role", "read_secret", "PENDING_TTL_NS"]

PENDING_TTL_NS = 10 * 60 * 10**9  # a sign-in must come back from the provider within 10 minutes
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._@-]")


@dataclass
class SsoConfig:
    """The providers configured, built once at start from ``SsoSettings``."""

    settings: SsoSettings = field(default_factory=SsoSettings)
    oidc: "OidcProvider | None" = None
    ldap: "LdapDirectory | None" = None
    wecom: "WeComLogin | None" = None

    @property
    def session_ns(self) -> int:
        """How long a session a provider opened lasts."""
        return int(self.settings.session_minutes * 60e9)

    def local_allowed(self, username: str) -> bool:
        """Whether the password form may sign this account in."""
        return self.settings.local_login or username in self.settings.break_glass

    def buttons(self) -> list[tuple[str, str]]:
        """(href, label) of the providers one signs in with by a redirect."""
        found = []
        if self.oidc is not None:
            found.append(("/sso/oidc/start", self.oidc.label))
        if self.wecom is not None:
            found.append(("/sso/wecom/start", self.wecom.label))
        return found


def read_secret(value: SecretStr | None, file: Path | None, what: str) -> str | None:
    """A secret given in the settings or in a file named there (one of the two); SsoConfigError when unreadable."""
    if value is not None and file is not None:
        raise SsoConfigError(f"{what}: give the secret or its file, not both")
    if file is None:
        return None if value is None else value.get_secret_value()
    try:
        text = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SsoConfigError(f"{what}_file {file}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not text:
        raise SsoConfigError(f"{what}_file {file} is empty")
    return text


def _check_role_map(role_map: dict[str, str], what: str) -> None:
    for group, role in role_map.items():
        if role not in ROLES:
            raise SsoConfigError(f"{what}.role_map: group {group!r} maps to unknown role {role!r}; "
                                 f"roles are {', '.join(sorted(ROLES))}")


def load_sso(settings: SsoSettings, *, oidc_transport: object | None = None,
             wecom_transport: object | None = None) -> SsoConfig:
    """Reads secrets and checks the sso settings; SsoConfigError with the setting's name when wrong."""
    from collector.people.sso.ldap import LdapDirectory
    from collector.people.sso.oidc import OidcProvider
    from collector.people.sso.wecom_login import WeComLogin

    for name in settings.break_glass:
        if not _USERNAME.match(name):
            raise SsoConfigError(f"sso.break_glass: {name!r} is not a user name")
    if settings.redirect_base_url is not None and not settings.redirect_base_url.startswith(("https://", "http://")):
        raise SsoConfigError("sso.redirect_base_url starts with https:// (or http://)")
    cfg = SsoConfig(settings=settings)
    if settings.oidc is not None:
        _check_role_map(settings.oidc.role_map, "sso.oidc")
        secret = read_secret(settings.oidc.client_secret, settings.oidc.client_secret_file, "sso.oidc.client_secret")
        cfg.oidc = OidcProvider(settings.oidc, secret, transport=oidc_transport)
    if settings.ldap is not None:
        _check_role_map(settings.ldap.role_map, "sso.ldap")
        password = read_secret(settings.ldap.bind_password, settings.ldap.bind_password_file, "sso.ldap.bind_password")
        cfg.ldap = LdapDirectory(settings.ldap, password)
    if settings.wecom is not None:
        secret = read_secret(settings.wecom.secret, settings.wecom.secret_file, "sso.wecom.secret")
        if not secret:
            raise SsoConfigError("sso.wecom: the application's secret (sso.wecom.secret or secret_file) is needed")
        cfg.wecom = WeComLogin(settings.wecom, secret, transport=wecom_transport)
    if not settings.local_login and not (cfg.oidc or cfg.ldap or cfg.wecom) and not settings.break_glass:
        raise SsoConfigError("sso.local_login is false but no provider and no break_glass account is set: "
                             "nobody could sign in")
    return cfg


def role_for(groups: Sequence[str], role_map: dict[str, str]) -> str | None:
    """The role the groups give: None when the map is empty (the collector grants), NO_ROLE when none matches."""
    if not role_map:
        return None
    have = {g.casefold() for g in groups}
    for group, role in role_map.items():
        if group.casefold() in have:
            return role
    return NO_ROLE


# --- the state between the redirect and the callback --------------------------------------------------
def start_pending(*, store: Store, provider: str, next_path: str, now_ns: int) -> tuple[str, SsoPending]:
    """A new state (returned once, for the redirect and the browser's cookie) with its nonce and PKCE verifier."""
    state = secrets.token_urlsafe(32)
    pending = SsoPending(secret_hash(state), provider, secrets.token_urlsafe(32), secrets.token_urlsafe(48),
                         next_path, now_ns)
    with store.transaction() as tx:
        tx.delete_sso_pending_before(before_ns=now_ns - PENDING_TTL_NS)
        tx.add_sso_pending(pending)
    return state, pending


def take_pending(*, store: Store, provider: str, state: str, cookie_state: str | None, now_ns: int) -> SsoPending:
    """The pending sign-in of a callback's state, used up; SignInRefused when it is not this browser's, or used."""
    if not state or not cookie_state or not secrets.compare_digest(state.encode(), cookie_state.encode()):
        raise SignInRefused("state does not match this browser's sign-in (forged or from another browser)")
    with store.transaction() as tx:
        pending = tx.take_sso_pending(state_hash=secret_hash(state))
    if pending is None:
        raise SignInRefused("state unknown or already used (a replayed callback)")
    if pending.provider != provider:
        raise SignInRefused(f"state was made for {pending.provider}, not {provider}")
    if now_ns - pending.created_at_ns > PENDING_TTL_NS:
        raise SignInRefused("the sign-in took longer than 10 minutes at the provider")
    return pending


# --- users, roles, sessions ---------------------------------------------------------------------------
def _free_name(tx: PeopleTx, hint: str, provider: str, subject: str) -> str:
    """A user name for a new person: the provider's name for them unless another account has it."""
    cleaned = _NAME_CHARS.sub("", hint.strip())[:100].lstrip("._@-")
    digest = hashlib.sha256(f"{provider}\0{subject}".encode()).hexdigest()[:12]
    for name in (cleaned, f"{cleaned}.{provider}" if cleaned else "", f"{provider}-{digest}"):
        if name and _USERNAME.match(name) and tx.get_user(name) is None:
            return name
    raise SignInRefused("no free user name for this person")


def audit_refusal(*, store: Store, provider: str, reason: str, peer: str, now_ns: int,
                  username: str | None = None) -> None:
    """Writes a refused provider sign-in to the audit log: who (if known), which provider, why."""
    with store.transaction() as tx:
        tx.append_audit(AuditEntry(now_ns, f"peer:{peer[:64]}", "login.refused", username or f"{provider} sign-in",
                                   {"provider": provider, "reason": reason[:300], "peer": peer[:64]}))


def complete_sign_in(*, store: Store, people: PeopleService, provider: str, subject: str, name_hint: str,
                     role: str | None, peer: str, session_ns: int, old_session: str | None = None) -> SignIn:
    """Finds or creates the provider's user, applies the role the groups give, and opens a session.

    ``role`` None leaves the role to the collector; NO_ROLE refuses (and ends the user's sessions).
    Raises SignInRefused (already audited, in the same transaction as the user's creation) when no
    session is given.
    """
    now = people.clock()
    token = new_secret("ss")
    refused: str | None = None
    with store.transaction() as tx:
        user = tx.get_user_by_subject(provider=provider, subject=subject)
        if user is None:
            user = User(username=_free_name(tx, name_hint, provider, subject), role=role or NO_ROLE,
                        password_hash=None, created_at_ns=now, provider=provider, subject=subject)
            try:
                tx.add_user(user)
            except AlreadyExists as exc:  # another collector created them a moment ago: the next sign-in finds them
                raise SignInRefused("the user was being created at the same time: sign in again") from exc
            tx.append_audit(AuditEntry(now, provider, "user.create", user.username,
                                       {"role": user.role or None, "provider": provider, "password": False}))
        elif role is not None and user.role != role:
            tx.update_user(replace(user, role=role))
            tx.append_audit(AuditEntry(now, provider, "user.role", user.username,
                                       {"before": {"role": user.role or None}, "after": {"role": role or None},
                                        "source": f"{provider} groups"}))
            user = replace(user, role=role)
        if user.disabled:
            refused = "the user is disabled in the collector"
        elif user.role == NO_ROLE:
            no_role = True
            refused = ("the provider's groups map to no role" if role is not None
                       else "no role granted in the collector yet")
        if refused is not None:
            ended = tx.revoke_user_tokens(username=user.username, kind="session")
            tx.append_audit(AuditEntry(now, f"peer:{peer[:64]}", "login.refused", user.username,
                                       {"provider": provider, "reason": refused, "peer": peer[:64],
                                        "sessions_ended": ended}))
        else:
            if old_session:
                tx.revoke_token(token_hash=secret_hash(old_session))
            tx.add_token(token_hash=secret_hash(token), username=user.username, kind="session", created_at_ns=now,
                         expires_at_ns=now + min(people.session_ttl_ns, session_ns))
            tx.append_audit(AuditEntry(now, user.username, "login", user.username,
                                       {"peer": peer[:64], "provider": provider}))
    if refused is not None:
        raise (NoRole if no_role else SignInRefused)(refused, subject=subject, username=user.username)
    return SignIn(token, user)


def grant_role(*, tx: PeopleTx, username: str, role: str, actor: str, clock: Callable[[], int]) -> User:
    """Sets a user's role in the collector (the way for providers whose groups do not say it)."""
    if role not in ROLES:
        raise BadRequest(f"unknown role {role!r}; roles are {', '.join(sorted(ROLES))}")
    user = tx.get_user(username) if _USERNAME.match(username) else None
    if user is None:
        raise NotFound(f"no user {username!r}")
    if user.role == "it_admin" and role != "it_admin" and not any(
            u.role == "it_admin" and not u.disabled and u.username != username for u in tx.list_users()):
        raise BadRequest("the last it_admin keeps the role")
    if user.role != role:
        tx.update_user(replace(user, role=role))
        tx.append_audit(AuditEntry(clock(), actor, "user.role", username,
                                   {"before": {"role": user.role or None}, "after": {"role": role},
                                    "source": "collector"}))
    return replace(user, role=role)
