"""Enrollment: tokens (one use, or a count of uses for a batch of machines, with labels the enrolled agents
receive) exchanged for an agent identity bound to its Ed25519 signing key
and, through the collector's CA, to a short-lived mutual-TLS client certificate.

Errors::

    EnrollmentError (status: a gRPC status code name)
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.audit.models import AuditEntry
from collector.enrollment.models import MAX_TOKEN_USES
from collector.fleet.models import AgentRecord, LabelError, check_labels
from collector.pki import CertificateAuthority, IssuedCertificate, PkiError
from collector.secrets import new_secret, secret_hash
from collector.storage.base import AgentArea, AuditArea, CertificateArea, EnrollmentArea

__all__ = ["EnrollmentError", "EnrollmentService", "Enrolled", "MIN_TTL_NS", "MAX_TTL_NS", "MAX_NAME_LEN"]

MIN_TTL_NS = 60 * 10**9
MAX_TTL_NS = 366 * 86400 * 10**9
MAX_NAME_LEN = 100


@dataclass(frozen=True)
class Enrolled:
    """What a successful enrollment gives the agent."""

    agent_id: str
    certificate: IssuedCertificate | None
    ca_pem: bytes


class EnrollmentError(Exception):
    """An enrollment that was refused."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


_REFUSED = {
    "unknown": "enrollment token is unknown",
    "used": "enrollment token is used: every one of its uses is spent",
    "expired": "enrollment token is expired",
    "revoked": "enrollment token is revoked",
}


class EnrollmentTx(EnrollmentArea, AgentArea, CertificateArea, AuditArea, Protocol):
    """What enrollment needs, in one transaction."""


class EnrollmentService:
    """Creates enrollment tokens and turns valid ones into enrolled agents, inside the caller's transaction."""

    def __init__(
        self,
        *,
        token_ttl_ns: int,
        ca: CertificateAuthority | None = None,
        cert_lifetime: dt.timedelta = dt.timedelta(days=7),
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.token_ttl_ns = token_ttl_ns
        self.ca = ca
        self.cert_lifetime = cert_lifetime
        self.clock = clock

    def create_token(self, *, tx: EnrollmentTx, actor: str, ttl_ns: int | None = None, max_uses: int = 1,
                     labels: Sequence[str] = (), name: str = "") -> str:
        """Creates an enrollment token good for ``max_uses`` agents, which receive ``labels``, and returns it
        (shown once: only its hash is kept). Raises EnrollmentError on a bad count, expiry, label or name."""
        ttl = self.token_ttl_ns if ttl_ns is None else ttl_ns
        if not MIN_TTL_NS <= ttl <= MAX_TTL_NS:
            raise EnrollmentError("INVALID_ARGUMENT", "a token's expiry is between 1 minute and 366 days away")
        if isinstance(max_uses, bool) or not isinstance(max_uses, int) or not 1 <= max_uses <= MAX_TOKEN_USES:
            raise EnrollmentError("INVALID_ARGUMENT", f"a token's use count is between 1 and {MAX_TOKEN_USES}")
        try:
            checked = check_labels(labels)
        except LabelError as exc:
            raise EnrollmentError("INVALID_ARGUMENT", str(exc)) from exc
        name = name.strip()
        if len(name) > MAX_NAME_LEN or any(ord(c) < 32 for c in name):
            raise EnrollmentError("INVALID_ARGUMENT", f"a token's name is at most {MAX_NAME_LEN} printable characters")
        token = new_secret("se")
        now = self.clock()
        token_hash = secret_hash(token)
        tx.add_enroll_token(token_hash=token_hash, created_at_ns=now, expires_at_ns=now + ttl, created_by=actor,
                            max_uses=max_uses, labels=checked, name=name)
        tx.append_audit(AuditEntry(now, actor, "enroll_token.create", token_hash[:12],
                                   {"expires_at_ns": now + ttl, "max_uses": max_uses, "labels": list(checked),
                                    "name": name}))
        return token

    def revoke_token(self, *, tx: EnrollmentTx, token: str, actor: str) -> bool:
        """Revokes an enrollment token with uses left (given its value); returns whether there was one."""
        return self.revoke_token_hash(tx=tx, token_hash=secret_hash(token), actor=actor)

    def revoke_token_hash(self, *, tx: EnrollmentTx, token_hash: str, actor: str) -> bool:
        """Revokes an enrollment token with uses left (given its hash, the id it is listed by)."""
        now = self.clock()
        done = tx.revoke_enroll_token(token_hash=token_hash, now_ns=now)
        tx.append_audit(AuditEntry(now, actor, "enroll_token.revoke", token_hash[:12], {"revoked": done}))
        return done

    def enroll(
        self,
        *,
        tx: EnrollmentTx,
        token: str,
        public_key: bytes,
        hostname: str,
        os_name: str,
        agent_version: str,
        peer: str,
        csr_pem: bytes = b"",
    ) -> Enrolled:
        """Consumes the token, registers the agent's key and issues its client certificate."""
        if not token or len(token) > 256:
            raise EnrollmentError("INVALID_ARGUMENT", "an enrollment token is required")
        try:
            Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError as exc:
            raise EnrollmentError("INVALID_ARGUMENT", "public_key must be a raw 32-byte Ed25519 key") from exc
        if not hostname or len(hostname) > 255:
            raise EnrollmentError("INVALID_ARGUMENT", "hostname is required (at most 255 characters)")
        if self.ca is not None and not csr_pem:
            raise EnrollmentError("INVALID_ARGUMENT", "csr_pem is required: agents authenticate with a client certificate")
        if csr_pem:
            self._check_csr(csr_pem)  # before the token is spent
        now = self.clock()
        agent = AgentRecord(
            agent_id=f"agt-{uuid.uuid4().hex}",
            public_key=public_key,
            hostname=hostname,
            os=os_name[:64],
            agent_version=agent_version[:64],
            enrolled_at_ns=now,
        )
        why_not = tx.consume_enroll_token(token_hash=secret_hash(token), agent=agent, now_ns=now)
        if why_not is not None:
            tx.append_audit(
                AuditEntry(now, f"peer:{peer}", "agent.enroll_refused", hostname, {"reason": why_not})
            )
            raise EnrollmentError("PERMISSION_DENIED", _REFUSED[why_not])
        certificate = self._issue(tx, agent.agent_id, csr_pem) if csr_pem and self.ca is not None else None
        enrolled = tx.get_agent(agent.agent_id)
        tx.append_audit(
            AuditEntry(now, f"peer:{peer}", "agent.enroll", agent.agent_id,
                       {"hostname": hostname, "certificate": str(certificate.serial) if certificate else None,
                        "token": secret_hash(token)[:12], "labels": list(enrolled.labels) if enrolled else []})
        )
        return Enrolled(agent.agent_id, certificate, self.ca.cert_pem if self.ca else b"")

    def renew(self, *, tx: EnrollmentTx, agent_id: str, serial: int, csr_pem: bytes) -> IssuedCertificate:
        """Issues a fresh certificate to an agent that presented a valid, unrevoked one."""
        if self.ca is None:
            raise EnrollmentError("FAILED_PRECONDITION", "this collector issues no certificates")
        agent = tx.get_agent(agent_id)
        status = tx.certificate_status(serial=serial)
        if agent is None or agent.revoked_at_ns is not None or status is None or status != (agent_id, False):
            raise EnrollmentError("PERMISSION_DENIED", f"agent {agent_id} or its certificate is revoked or unknown")
        self._check_csr(csr_pem)
        issued = self._issue(tx, agent_id, csr_pem)
        tx.revoke_certificate(serial=serial, now_ns=self.clock())  # the replaced one is dead from now on
        tx.append_audit(AuditEntry(self.clock(), f"agent:{agent_id}", "certificate.renew", agent_id,
                                           {"old": str(serial), "new": str(issued.serial)}))
        return issued

    def _check_csr(self, csr_pem: bytes) -> None:
        if self.ca is None:
            return
        try:
            self.ca.issue_client(csr_pem=csr_pem, agent_id="check", lifetime=dt.timedelta(seconds=1))
        except PkiError as exc:
            raise EnrollmentError("INVALID_ARGUMENT", str(exc)) from exc

    def _issue(self, tx: EnrollmentTx, agent_id: str, csr_pem: bytes) -> IssuedCertificate:
        assert self.ca is not None
        issued = self.ca.issue_client(csr_pem=csr_pem, agent_id=agent_id, lifetime=self.cert_lifetime)
        tx.add_certificate(serial=issued.serial, agent_id=agent_id,
                                   not_before_ns=issued.not_before_ns, not_after_ns=issued.not_after_ns)
        return issued
