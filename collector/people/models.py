"""People who use the collector's UI and API, their tokens, and the state of login throttling (values only)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["User", "UserToken", "ThrottleState", "LANGS", "TOKEN_KINDS"]

LANGS: tuple[str, ...] = ("zh", "en")
TOKEN_KINDS: tuple[str, ...] = ("session", "api")


@dataclass(frozen=True)
class User:
    """A person who uses the collector's UI or API."""

    username: str
    role: str
    password_hash: str | None
    created_at_ns: int
    disabled: bool = False
    lang: str = "zh"


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
