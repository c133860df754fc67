"""Bearer secrets (enrollment, API and session tokens): made here, stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["new_secret", "secret_hash"]


def new_secret(prefix: str) -> str:
    """Returns a new 256-bit secret with a recognisable prefix (so leaked tokens can be scanned for)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def secret_hash(secret: str) -> str:
    """Returns the hex SHA-256 under which a secret is stored; secrets are random, so no salt is needed."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
