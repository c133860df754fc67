"""LDAP bind (Active Directory, OpenLDAP): the password is checked by binding as the user, groups read from memberOf.

The user's DN comes from a search with the service account (``bind_dn``, ``user_filter`` under
``user_base``) or from ``user_dn_template`` without one. What the person typed is escaped where it
goes: in a search filter by RFC 4515 (``*``, ``(``, ``)``, ``\\``, NUL become ``\\2a`` ...), in a DN by
RFC 4514, so no user name can widen a search or name another entry. An empty password is refused
before any bind: LDAP servers take a simple bind with a name and no password as an *unauthenticated*
bind that succeeds (RFC 4513 §5.1.2). This module speaks LDAP and nothing else.
"""

from __future__ import annotations

import ssl
import warnings
from typing import Any

with warnings.catch_warnings():  # ldap3 2.9.1 imports names pyasn1 0.6 calls deprecated (tagMap, typeMap)
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core.exceptions import LDAPException
    from ldap3.utils.conv import escape_filter_chars

from collector.people.sso import ProviderUnavailable, SignInRefused
from collector.settings import LdapSettings

__all__ = ["LdapDirectory", "LdapUser", "escape_dn_value"]


def escape_dn_value(value: str) -> str:
    """An attribute value escaped for a DN (RFC 4514 §2.4)."""
    out = []
    for i, ch in enumerate(value):
        if ch in '\\,+"<>;=#':  # '#' is special only in front (RFC 4514), escaped everywhere for stricter parsers
            out.append("\\" + ch)
        elif ch == "\x00":
            out.append("\\00")
        elif (i == 0 or i == len(value) - 1) and ch == " ":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


class LdapUser:
    """A person the directory vouched for: their DN, a name, their groups."""

    def __init__(self, dn: str, name: str, groups: list[str]) -> None:
        self.dn = dn
        self.name = name
        self.groups = groups


def _cn(dn: str) -> str:
    first = dn.split(",", 1)[0]
    key, _, value = first.partition("=")
    return value if key.strip().lower() == "cn" else ""


class LdapDirectory:
    """One directory; every sign-in opens its own connections (nothing stays bound)."""

    name = "ldap"

    def __init__(self, cfg: LdapSettings, bind_password: str | None) -> None:
        from collector.people.sso import SsoConfigError

        if cfg.user_dn_template is None and not (cfg.bind_dn and cfg.user_base):
            raise SsoConfigError("sso.ldap: set bind_dn, bind_password and user_base (a search for the user's DN), "
                                 "or user_dn_template")
        if cfg.bind_dn and not bind_password:
            raise SsoConfigError("sso.ldap.bind_dn is set without bind_password (or bind_password_file)")
        if cfg.user_dn_template is not None and "{username}" not in cfg.user_dn_template:
            raise SsoConfigError("sso.ldap.user_dn_template must contain {username}")
        if "{username}" not in cfg.user_filter:
            raise SsoConfigError("sso.ldap.user_filter must contain {username}")
        self.cfg = cfg
        self.label = cfg.label
        self._bind_password = bind_password
        tls = None
        if cfg.url.startswith("ldaps://") or cfg.start_tls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(cfg.ca_file) if cfg.ca_file else None)
        self._server = ldap3.Server(cfg.url, get_info=ldap3.NONE, tls=tls, connect_timeout=cfg.timeout_seconds)

    def __repr__(self) -> str:
        return f"LdapDirectory(url={self.cfg.url!r}, bind_dn={self.cfg.bind_dn!r})"

    def _connection(self, user: str | None, password: str | None) -> ldap3.Connection:
        # ldap3 packs the receive timeout into a C timeval: whole seconds
        conn = ldap3.Connection(self._server, user=user, password=password, authentication=ldap3.SIMPLE,
                                receive_timeout=max(1, round(self.cfg.timeout_seconds)), raise_exceptions=False,
                                read_only=True)
        try:
            conn.open()
            if self.cfg.start_tls and not self.cfg.url.startswith("ldaps://"):
                conn.start_tls()
        except (LDAPException, OSError) as exc:
            if conn.socket is not None:  # ldap3 leaves the socket of a refused connection open
                conn.socket.close()
            conn.unbind()
            raise ProviderUnavailable(self.name, f"directory unreachable ({type(exc).__name__})") from None
        return conn

    def _bind(self, conn: ldap3.Connection) -> bool:
        try:
            return bool(conn.bind())
        except LDAPException as exc:
            raise ProviderUnavailable(self.name, f"bind failed ({type(exc).__name__})") from None

    def _search(self, conn: ldap3.Connection, base: str, query: str, scope: Any) -> list[Any]:
        try:
            conn.search(base, query, search_scope=scope, attributes=[self.cfg.group_attribute], size_limit=2)
        except LDAPException as exc:
            raise ProviderUnavailable(self.name, f"search failed ({type(exc).__name__})") from None
        return [e for e in conn.response or [] if e.get("type") == "searchResEntry"]

    def user_filter(self, username: str) -> str:
        """The search filter for a typed user name, escaped (RFC 4515)."""
        return self.cfg.user_filter.replace("{username}", escape_filter_chars(username))

    def user_dn(self, username: str) -> str:
        """The DN the template gives a typed user name, escaped (RFC 4514)."""
        assert self.cfg.user_dn_template is not None
        return self.cfg.user_dn_template.replace("{username}", escape_dn_value(username))

    def authenticate(self, username: str, password: str) -> LdapUser:
        """The person if the password binds as them; SignInRefused otherwise (never saying which part was wrong)."""
        if not password:
            raise SignInRefused("empty password (an unauthenticated bind is never tried)")
        if not username or len(username) > 256 or len(password) > 1024:
            raise SignInRefused("user name or password missing or too long")
        if "\x00" in password:  # no directory takes one; ldap3 would fail on it, not refuse
            raise SignInRefused("a password with a NUL character")
        if self.cfg.user_dn_template is None:
            service = self._connection(self.cfg.bind_dn, self._bind_password)
            try:
                if not self._bind(service):
                    raise ProviderUnavailable(self.name, "the service account's bind was refused (check bind_dn "
                                                         "and its password)")
                assert self.cfg.user_base is not None
                found = self._search(service, self.cfg.user_base, self.user_filter(username), ldap3.SUBTREE)
            finally:
                service.unbind()
            if len(found) != 1:
                raise SignInRefused("no such directory user" if not found else "the user name matches several entries")
            dn = str(found[0]["dn"])
            entry = found[0]
        else:
            dn, entry = self.user_dn(username), None
        conn = self._connection(dn, password)
        try:
            if not self._bind(conn):
                raise SignInRefused("wrong password for the directory user")
            if entry is None:
                found = self._search(conn, dn, "(objectClass=*)", ldap3.BASE)
                entry = found[0] if found else {"attributes": {}}
        finally:
            conn.unbind()
        values = entry.get("attributes", {}).get(self.cfg.group_attribute) or []
        if isinstance(values, str):
            values = [values]
        groups = [str(v) for v in values]
        groups += [cn for cn in (_cn(g) for g in groups) if cn]  # a map may name a group by its DN or its CN
        return LdapUser(dn, username, groups)
