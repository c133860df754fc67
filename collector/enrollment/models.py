"""Enrollment's values: an enrollment token as listed (its value is shown once, at creation, and never stored)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EnrollToken", "MAX_TOKEN_USES", "token_state"]

MAX_TOKEN_USES = 100_000


@dataclass(frozen=True)
class EnrollToken:
    """A token's record: its hash (the id the API names it by), uses and the labels enrolled agents receive."""

    token_hash: str
    created_by: str
    created_at_ns: int
    expires_at_ns: int
    max_uses: int = 1
    uses: int = 0
    labels: tuple[str, ...] = ()
    name: str = ""
    used_at_ns: int | None = None            # the latest use
    revoked_at_ns: int | None = None


def token_state(t: EnrollToken, *, now_ns: int) -> str:
    """'revoked', 'used' (every use spent), 'expired' or 'active'."""
    if t.revoked_at_ns is not None:
        return "revoked"
    if t.uses >= t.max_uses:
        return "used"
    if t.expires_at_ns <= now_ns:
        return "expired"
    return "active"
