"""People who use the collector's UI and API."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["User"]


@dataclass(frozen=True)
class User:
    """A person who uses the collector's UI or API."""

    username: str
    role: str
    password_hash: str | None
    created_at_ns: int
    disabled: bool = False
