"""Single sign-on for the collector's web UI: OpenID Connect, LDAP bind (Active Directory), WeCom web login.

A person a provider vouches for becomes a collector user marked with the provider and its subject
(``User.provider``/``User.subject``) and gets the collector's usual session cookie, bounded to
``sso.session_minutes`` so that someone removed at the provider, or whose groups no longer map to a
role, loses access at most that long after (the next sign-in asks the provider again and is refused).
Modules: ``service`` (roles from groups, users, sessions, audit), ``oidc``, ``ldap``, ``wecom_login``
(the provider adapters: they speak HTTP or LDAP and nothing else), ``views`` (the routes). Errors::

    SsoError
     ├── SsoConfigError       (the settings are wrong: the collector does not start)
     ├── ProviderUnavailable  (the provider did not answer or answered nonsense: 503, try again)
     └── SignInRefused        (the callback, token or password does not hold: audited with ``reason``)
          └── NoRole          (the person is known but holds no role: "ask IT")

This package never logs or audits a secret, a password, a code or a token.
"""

from __future__ import annotations

__all__ = ["SsoError", "SsoConfigError", "ProviderUnavailable", "SignInRefused", "NoRole"]


class SsoError(Exception):
    """Base of the errors of single sign-on."""


class SsoConfigError(SsoError, ValueError):
    """The sso settings cannot work; the message says which setting and why (a ValueError: the CLI prints it)."""


class ProviderUnavailable(SsoError):
    """The provider did not answer usefully; the person may try again later."""

    def __init__(self, provider: str, reason: str) -> None:
        self.provider = provider
        self.reason = reason
        super().__init__(f"{provider}: {reason}")


class SignInRefused(SsoError):
    """A sign-in through a provider that does not hold; ``reason`` goes to the audit log (never a secret)."""

    def __init__(self, reason: str, *, subject: str | None = None, username: str | None = None) -> None:
        self.reason = reason
        self.subject = subject
        self.username = username
        super().__init__(reason)


class NoRole(SignInRefused):
    """The provider vouched for the person, but no role is theirs (their groups map to none, or IT has not granted one)."""
