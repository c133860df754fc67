"""The collector's own certificate authority: the trust root of every agent connection.

Created on first start under the data directory (private keys 0600). Three kinds of certificate:

- the CA certificate, which the enrollment listener also presents: an agent that pins the CA's
  SHA-256 fingerprint (``shoumi-collector ca-fingerprint``) fetches it in the TLS handshake, checks
  the pin, and only then sends its one-time token, inside TLS verified against that CA;
- the collector's server certificate for the agent listener (mutual TLS);
- short-lived client certificates, one per agent, bound to the agent id (subject CN and a
  ``urn:shoumi:agent:<id>`` URI), issued for the agent's CSR and renewed before they expire.

Errors::

    PkiError (a CSR that does not verify, a damaged key file)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoumi.tls import AGENT_URI_PREFIX, TLS_NAME

__all__ = ["PkiError", "TLS_NAME", "CertificateAuthority", "IssuedCertificate", "fingerprint_of", "agent_id_of"]



class PkiError(Exception):
    """A certificate operation that cannot be done."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A client certificate as issued."""

    pem: bytes
    serial: int
    agent_id: str
    not_before_ns: int
    not_after_ns: int


def fingerprint_of(cert_pem: bytes) -> str:
    """Returns the SHA-256 fingerprint (lowercase hex) of a PEM certificate's DER bytes."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def agent_id_of(cert_pem: bytes) -> str | None:
    """Returns the agent id a client certificate is bound to, or None."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(AGENT_URI_PREFIX):
            return uri[len(AGENT_URI_PREFIX):]
    return None


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class CertificateAuthority:
    """The CA's key and certificate, and the collector's server certificate."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, directory: Path) -> None:
        self.key = key
        self.cert = cert
        self.directory = directory

    @classmethod
    def load_or_create(cls, directory: Path) -> "CertificateAuthority":
        """Loads the CA from directory/pki, creating it (keys 0600) on first use."""
        pki = directory / "pki"
        pki.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path, cert_path = pki / "ca.key", pki / "ca.pem"
        if key_path.exists() and cert_path.exists():
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except ValueError as exc:
                raise PkiError(f"the CA in {pki} is damaged: {exc}") from exc
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise PkiError(f"{key_path} is not an EC key")
            return cls(key, cert, directory)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Shoumi"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Shoumi collector CA {socket.gethostname()}"),
        ])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_NAME)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, directory)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The CA key, PEM (the enrollment listener's TLS identity)."""
        return _key_pem(self.key)

    def fingerprint(self) -> str:
        """The SHA-256 fingerprint agents pin."""
        return fingerprint_of(self.cert_pem)

    def server_identity(self, *, extra_names: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
        """Returns (key PEM, certificate chain PEM) for the agent listener, issuing them once."""
        pki = self.directory / "pki"
        key_path, cert_path = pki / "server.key", pki / "server.pem"
        if key_path.exists() and cert_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if cert.not_valid_after_utc - _now() > dt.timedelta(days=30):
                return key_path.read_bytes(), cert_path.read_bytes() + self.cert_pem
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(TLS_NAME), x509.DNSName("localhost")]
        names += [x509.DNSName(n) for n in (socket.gethostname(), *extra_names) if n]
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_NAME)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key_path.read_bytes(), cert_path.read_bytes() + self.cert_pem

    def issue_client(
        self, *, csr_pem: bytes, agent_id: str, lifetime: dt.timedelta, not_before: dt.datetime | None = None
    ) -> IssuedCertificate:
        """Issues a client certificate for an agent's CSR, bound to the agent id (not to what the CSR asks)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PkiError("csr_pem is not a PEM certificate request") from exc
        if not csr.is_signature_valid:
            raise PkiError("the certificate request's signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise PkiError("the certificate request must carry an EC P-256 key")
        start = not_before or (_now() - dt.timedelta(minutes=5))
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(AGENT_URI_PREFIX + agent_id)]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return IssuedCertificate(
            pem=cert.public_bytes(serialization.Encoding.PEM),
            serial=serial,
            agent_id=agent_id,
            not_before_ns=int(start.timestamp() * 1e9),
            not_after_ns=int((start + lifetime).timestamp() * 1e9),
        )
