"""A test CA, a signing certificate, a TSA certificate; a minimal PDF; signing it with pyHanko; a local RFC 3161 TSA.

The TSA is a real HTTP server on a loopback port chosen by the OS: it reads a DER TimeStampReq and answers a
TimeStampResp (``application/timestamp-reply``) whose token is a CMS SignedData over a TSTInfo, signed by the
TSA's own test key (pyHanko's DummyTimeStamper builds the ASN.1). ``stop()`` closes the socket, so a test can
take it down and start it again on the same port.
"""

from __future__ import annotations

import datetime as dt
import http.server
import io
import threading
from dataclasses import dataclass

from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "make_pki", "minimal_pdf", "sign_pdf", "LocalTsa"]


@dataclass
class Pki:
    ca_cert: x509.Certificate
    ca_key: rsa.RSAPrivateKey
    signer_cert: x509.Certificate
    signer_key: rsa.RSAPrivateKey
    tsa_cert: x509.Certificate
    tsa_key: rsa.RSAPrivateKey

    def pem(self, cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                      "Shoumi Test"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: rsa.RSAPrivateKey, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey, *, ca: bool,
          eku: list[x509.ObjectIdentifier] | None = None, days: int = 3650) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400)  # timestamps in the past fall inside
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=True)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(ca_name: str = "Shoumi Test CA") -> Pki:
    """A CA, an employee's signing certificate and a TSA certificate (extended key usage: time stamping)."""
    ca_key, signer_key, tsa_key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3))
    ca = _cert(ca_name, ca_key, _name(ca_name), ca_key, ca=True)
    signer = _cert("张三 E-1001", signer_key, ca.subject, ca_key, ca=False)
    tsa = _cert("Shoumi Test TSA", tsa_key, ca.subject, ca_key, ca=False, eku=[ExtendedKeyUsageOID.TIME_STAMPING])
    return Pki(ca, ca_key, signer, signer_key, tsa, tsa_key)


def minimal_pdf(text: str = "Confidentiality agreement v1") -> bytes:
    """A one-page PDF with a line of text and a correct cross-reference table."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _asn1_key(key: rsa.RSAPrivateKey) -> asn1_keys.PrivateKeyInfo:
    return asn1_keys.PrivateKeyInfo.load(key.private_bytes(serialization.Encoding.DER,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))


def sign_pdf(pdf: bytes, pki: Pki, *, tsa_url: str | None) -> bytes:
    """Signs the PDF as the employee with pyHanko (PAdES), timestamped by the TSA at ``tsa_url`` when given."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    signer = signers.SimpleSigner(signing_cert=_asn1_cert(pki.signer_cert), signing_key=_asn1_key(pki.signer_key),
                                  cert_registry=SimpleCertificateStore.from_certs([_asn1_cert(pki.ca_cert)]))
    out = io.BytesIO()
    signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)),
                     signers.PdfSignatureMetadata(field_name="Signature1", md_algorithm="sha256",
                                                  reason="签署保密协议"),
                     signer=signer, timestamper=RequestsHTTPTimeStamper(tsa_url) if tsa_url else None, output=out)
    return out.getvalue()


class LocalTsa:
    """An RFC 3161 timestamp authority over HTTP on 127.0.0.1, written for the tests."""

    def __init__(self, pki: Pki, port: int = 0, fixed_dt: dt.datetime | None = None) -> None:
        from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
        from pyhanko_certvalidator.registry import SimpleCertificateStore

        self.stamper = DummyTimeStamper(tsa_cert=_asn1_cert(pki.tsa_cert), tsa_key=_asn1_key(pki.tsa_key),
                                        certs_to_embed=SimpleCertificateStore.from_certs([_asn1_cert(pki.ca_cert)]),
                                        fixed_dt=fixed_dt)
        self.requests = 0
        self._port = port
        self._server: http.server.ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/tsa"

    def start(self) -> None:
        tsa = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    req = tsp.TimeStampReq.load(body)
                    answer = tsa.stamper.request_tsa_response(req).dump()
                except Exception:  # a request that is not a TimeStampReq
                    self.send_response(400)
                    self.end_headers()
                    return
                tsa.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
