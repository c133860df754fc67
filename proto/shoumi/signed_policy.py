"""The signed bytes of a policy the collector pushes, shared by the collector (signs) and the agent (verifies).

Like ``batch.py`` it does no I/O. The signature covers a domain tag, the name, the version, the
issue time and the SHA-256 of the document, each length-delimited, so no field can be shifted into
another and a policy signed for one name or version cannot be replayed as another.

Errors::

    PolicySignatureError     the signature is missing, malformed or does not verify
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shoumi.v1 import events_pb2

__all__ = ["DOMAIN", "PolicySignatureError", "document_sha256", "signed_bytes", "sign_policy", "verify_policy"]

DOMAIN = b"shoumi.v1.SignedPolicy\n"


class PolicySignatureError(Exception):
    """A pushed policy whose signature does not verify under the pinned collector key."""


def document_sha256(document: bytes) -> str:
    """Returns the lowercase hex SHA-256 of a policy document, the hash agents report."""
    return hashlib.sha256(document).hexdigest()


def signed_bytes(*, name: str, version: int, issued_unix_ns: int, document: bytes) -> bytes:
    """Returns the bytes a policy's signature covers."""
    encoded = name.encode("utf-8")
    return (DOMAIN + struct.pack(">I", len(encoded)) + encoded
            + struct.pack(">Qq", version, issued_unix_ns) + hashlib.sha256(document).digest())


def sign_policy(*, name: str, version: int, issued_unix_ns: int, document: bytes,
                key: Ed25519PrivateKey) -> events_pb2.SignedPolicy:
    """Returns the signed message for one policy version."""
    data = signed_bytes(name=name, version=version, issued_unix_ns=issued_unix_ns, document=document)
    return events_pb2.SignedPolicy(name=name, version=version, document=document,
                                   issued_unix_ns=issued_unix_ns, signature=key.sign(data))


def verify_policy(policy: events_pb2.SignedPolicy, public_key: bytes) -> None:
    """Raises PolicySignatureError unless the policy was signed by the holder of ``public_key``."""
    if len(policy.signature) != 64:
        raise PolicySignatureError("the policy carries no valid signature")
    data = signed_bytes(name=policy.name, version=policy.version, issued_unix_ns=policy.issued_unix_ns,
                        document=bytes(policy.document))
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(bytes(policy.signature), data)
    except (InvalidSignature, ValueError) as exc:
        raise PolicySignatureError("the policy's signature does not verify under the pinned collector key") from exc
