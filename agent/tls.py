"""The agent's TLS side: pinning the collector's CA at enrollment, its client identity, renewal.

The client identity (key and certificate) lives in one file, ``tls-identity.pem`` (0600), replaced
atomically, so a renewal interrupted at any point leaves a matching key and certificate. Channels
are built from the files each time, so a renewed certificate is used from the next connection on.

Errors::

    TlsError (pin mismatch, a response that does not verify, unreadable identity)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import ssl
import threading
from pathlib import Path
from typing import Callable

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shoumi.tls import AGENT_URI_PREFIX, TLS_NAME
from shoumi.v1 import ingest_pb2, ingest_pb2_grpc

from agent.identity import write_private

__all__ = [
    "TlsError", "fetch_pinned_ca", "new_key_and_csr", "check_issued", "save_identity", "channel_factory",
    "CertificateRenewer",
]

log = logging.getLogger("shoumi.agent.tls")
CA_FILE = "ca.pem"
IDENTITY_FILE = "tls-identity.pem"


class TlsError(Exception):
    """The TLS material cannot be trusted or used."""


def _fingerprint(pem: bytes) -> str:
    return hashlib.sha256(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def fetch_pinned_ca(host: str, port: int, fingerprint: str, *, timeout: float = 10.0) -> bytes:
    """Takes the certificate the enrollment listener presents and returns it if it is the pinned CA.

    Nothing secret has been sent at this point; the token goes only over a channel verified
    against the certificate returned here.
    """
    try:
        pem = ssl.get_server_certificate((host, port), timeout=timeout).encode()
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot reach the enrollment listener {host}:{port} over TLS: {exc}") from exc
    found = _fingerprint(pem)
    if found != fingerprint:
        raise TlsError(
            f"the collector presents CA fingerprint {found}, not the pinned {fingerprint}: token not sent"
        )
    return pem


def new_key_and_csr() -> tuple[bytes, bytes]:
    """Returns (key PEM, CSR PEM) for a new EC P-256 client key."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoumi-agent")]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def check_issued(cert_pem: bytes, ca_pem: bytes, agent_id: str) -> x509.Certificate:
    """Checks that a client certificate was issued by the CA to this agent."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (ValueError, TypeError, Exception) as exc:  # cryptography raises InvalidSignature too
        raise TlsError(f"the certificate returned is not issued by the pinned CA: {exc}") from exc
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if AGENT_URI_PREFIX + agent_id not in sans.get_values_for_type(x509.UniformResourceIdentifier):
        raise TlsError(f"the certificate returned is not bound to agent {agent_id}")
    return cert


def save_identity(state_dir: Path, *, key_pem: bytes, cert_pem: bytes, ca_pem: bytes | None = None) -> None:
    """Stores the client identity (one file, atomically) and, at enrollment, the CA."""
    if ca_pem is not None:
        write_private(state_dir / CA_FILE, ca_pem)
    write_private(state_dir / IDENTITY_FILE, key_pem + cert_pem)


def _load_identity(state_dir: Path) -> tuple[bytes, bytes, bytes]:
    try:
        ca_pem = (state_dir / CA_FILE).read_bytes()
        blob = (state_dir / IDENTITY_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise TlsError(f"no TLS identity in {state_dir}: enroll with --ca-fingerprint first") from exc
    marker = b"-----BEGIN CERTIFICATE-----"
    cut = blob.find(marker)
    if cut <= 0:
        raise TlsError(f"{state_dir / IDENTITY_FILE} is damaged")
    return ca_pem, blob[:cut], blob[cut:]


def channel_factory(state_dir: Path) -> Callable[[str], grpc.Channel]:
    """Returns a function that opens a mutual-TLS channel with the current identity."""
    _load_identity(state_dir)  # fail early and clearly

    def open_channel(target: str) -> grpc.Channel:
        ca_pem, key_pem, cert_pem = _load_identity(state_dir)
        creds = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem)
        return grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", TLS_NAME)])

    return open_channel


class CertificateRenewer:
    """Renews the client certificate once two thirds of its lifetime have passed."""

    def __init__(self, state_dir: Path, agent_id: str, targets: list[str], *, check_every_s: float = 60.0) -> None:
        self.state_dir = state_dir
        self.agent_id = agent_id
        self.targets = targets
        self.check_every_s = check_every_s
        self.open_channel = channel_factory(state_dir)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cert-renewer", daemon=True)
        self.renewals = 0

    def due(self, now: dt.datetime | None = None) -> bool:
        """Tells whether the current certificate should be renewed now."""
        _, _, cert_pem = _load_identity(self.state_dir)
        cert = x509.load_pem_x509_certificate(cert_pem)
        now = now or dt.datetime.now(dt.timezone.utc)
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        return now >= cert.not_valid_before_utc + life * 2 / 3

    def renew(self) -> None:
        """Asks the collector for a new certificate for a new key, and stores both."""
        ca_pem, _, _ = _load_identity(self.state_dir)
        key_pem, csr_pem = new_key_and_csr()
        last: Exception | None = None
        for target in self.targets:
            with self.open_channel(target) as channel:
                try:
                    reply = ingest_pb2_grpc.CertificateServiceStub(channel).Renew(
                        ingest_pb2.RenewRequest(csr_pem=csr_pem), timeout=15)
                except grpc.RpcError as exc:
                    last = exc
                    continue
            check_issued(bytes(reply.client_certificate_pem), ca_pem, self.agent_id)
            save_identity(self.state_dir, key_pem=key_pem, cert_pem=bytes(reply.client_certificate_pem))
            self.renewals += 1
            log.info("client certificate renewed")
            return
        raise TlsError(f"renewal failed on every collector: {last}")

    def start(self) -> None:
        """Starts checking in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stops checking."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.due():
                    self.renew()
            except (TlsError, OSError, ValueError) as exc:
                log.error("certificate renewal: %s", exc)
            self._stop.wait(self.check_every_s)
