"""Enrollment: one-time tokens exchanged for an agent identity bound to its Ed25519 key.

Errors::

    EnrollmentError (status: a gRPC status code name)
"""

from __future__ import annotations

import time
import uuid
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.domain.records import AgentRecord, AuditEntry
from collector.secrets import new_secret, secret_hash
from collector.storage.base import Store

__all__ = ["EnrollmentError", "EnrollmentService"]


class EnrollmentError(Exception):
    """An enrollment that was refused."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class EnrollmentService:
    """Creates enrollment tokens and turns valid ones into enrolled agents."""

    def __init__(self, store: Store, *, token_ttl_ns: int, clock: Callable[[], int] = time.time_ns) -> None:
        self.store = store
        self.token_ttl_ns = token_ttl_ns
        self.clock = clock

    def create_token(self, *, actor: str) -> str:
        """Creates a one-time enrollment token and returns it (only its hash is kept)."""
        token = new_secret("se")
        now = self.clock()
        self.store.add_enroll_token(
            token_hash=secret_hash(token), created_at_ns=now, expires_at_ns=now + self.token_ttl_ns, created_by=actor
        )
        self.store.append_audit(
            AuditEntry(now, actor, "enroll_token.create", secret_hash(token)[:12], {"expires_at_ns": now + self.token_ttl_ns})
        )
        return token

    def enroll(
        self, *, token: str, public_key: bytes, hostname: str, os_name: str, agent_version: str, peer: str
    ) -> str:
        """Consumes the token and registers the agent's key; returns the new agent id."""
        if not token or len(token) > 256:
            raise EnrollmentError("INVALID_ARGUMENT", "an enrollment token is required")
        try:
            Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError as exc:
            raise EnrollmentError("INVALID_ARGUMENT", "public_key must be a raw 32-byte Ed25519 key") from exc
        if not hostname or len(hostname) > 255:
            raise EnrollmentError("INVALID_ARGUMENT", "hostname is required (at most 255 characters)")
        now = self.clock()
        agent = AgentRecord(
            agent_id=f"agt-{uuid.uuid4().hex}",
            public_key=public_key,
            hostname=hostname,
            os=os_name[:64],
            agent_version=agent_version[:64],
            enrolled_at_ns=now,
        )
        why_not = self.store.consume_enroll_token(token_hash=secret_hash(token), agent=agent, now_ns=now)
        if why_not is not None:
            self.store.append_audit(
                AuditEntry(now, f"peer:{peer}", "agent.enroll_refused", hostname, {"reason": why_not})
            )
            raise EnrollmentError("PERMISSION_DENIED", f"enrollment token is {why_not}")
        self.store.append_audit(
            AuditEntry(now, f"peer:{peer}", "agent.enroll", agent.agent_id, {"hostname": hostname})
        )
        return agent.agent_id
