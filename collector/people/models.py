"""People who use the collector's UI and API, their tokens, and the state of login throttling (values only)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["User", "UserToken", "ThrottleState", "SsoPending", "LANGS", "TOKEN_KINDS", "NO_ROLE"]

LANGS: tuple[str, ...] = ("zh", "en")
TOKEN_KINDS: tuple[str, ...] = ("session", "api")
NO_ROLE = ""  # a user a provider signed in whose groups map to no role: no access until IT grants one


@dataclass(frozen=True)
class User:
    """A person who uses the collector's UI or API."""

    username: str
    role: str
    password_hash: str | None
    created_at_ns: int
    disabled: bool = False
    lang: str = "zh"
    provider: str | None = None  # "oidc", "ldap", "wecom": signed in through it (collector/people/sso); None: local
    subject: str | None = None  # the provider's stable id of the person (OIDC sub, LDAP DN, WeCom userid)


@dataclass(frozen=True)
class UserToken:
    """A session or API token as stored: only the hash of its secret, never the secret."""

    token_hash: str
    username: str
    kind: str
    created_at_ns: int
    expires_at_ns: int | None
    revoked: bool = False
    name: str | None = None
    last_used_ns: int | None = None

    @property
    def id(self) -> str:
        """The token's public id: a prefix of the hash of its secret (the secret stays unknown)."""
        return self.token_hash[:16]


@dataclass(frozen=True)
class ThrottleState:
    """Failed sign-ins counted under one key of one scope (collector/people/throttle.py)."""

    scope: str
    key: str
    failures: int
    window_start_ns: int
    locked_until_ns: int = 0
    lockouts: int = 0


@dataclass(frozen=True)
class SsoPending:
    """A sign-in started at a provider and not yet come back: what the callback must match (used once)."""

    state_hash: str
    provider: str
    nonce: str
    verifier: str
    next_path: str
    created_at_ns: int
