"""WeCom's callback crypto (the "加解密方案" of the callback URL), with ``cryptography``.

WeCom signs and encrypts what it sends to an application's callback URL:

- ``msg_signature`` = SHA1 of the token, timestamp, nonce and the encrypted text, sorted and joined;
- the encrypted text is base64 of AES-256-CBC with key = base64(EncodingAESKey + "=") (32 bytes) and
  IV = its first 16 bytes, over: 16 random bytes, the message length (4 bytes, big-endian), the message,
  the receiver id (the corp id); padded PKCS#7 to a multiple of 32 bytes (WeCom's block, not AES's 16).

``decrypt`` refuses (``CallbackRefused`` with a reason) a wrong signature, a timestamp too far from now
(a replay), bad base64, bad padding, a length that does not fit, and a receiver id that is not our corp.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["CallbackCrypto", "CallbackRefused", "signature", "parse_xml"]

_BLOCK = 32


class CallbackRefused(ValueError):
    """A callback that does not verify; ``reason`` says which check failed (never the key or token)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    """WeCom's msg_signature."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()


def parse_xml(raw: bytes | str) -> dict[str, str]:
    """The child elements of a flat WeCom XML document; a DOCTYPE or entity is refused (no XML bombs)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise CallbackRefused("XML with a DOCTYPE or entity")
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        raise CallbackRefused("not XML") from None
    return {child.tag: (child.text or "") for child in root}


@dataclass(frozen=True)
class CallbackCrypto:
    """The callback settings of one application: its Token, EncodingAESKey (43 chars) and the corp id."""

    token: str
    encoding_aes_key: str
    corp_id: str
    max_skew_s: float = 300.0

    def __post_init__(self) -> None:
        if len(self.encoding_aes_key) != 43:
            raise ValueError("EncodingAESKey has 43 characters")
        try:
            key = base64.b64decode(self.encoding_aes_key + "=", validate=True)
        except ValueError:
            raise ValueError("EncodingAESKey is not base64") from None
        if len(key) != 32:
            raise ValueError("EncodingAESKey does not decode to 32 bytes")

    def __repr__(self) -> str:
        return f"CallbackCrypto(corp_id={self.corp_id!r})"

    @property
    def _key(self) -> bytes:
        return base64.b64decode(self.encoding_aes_key + "=")

    def encrypt(self, message: str, *, receiver: str | None = None, random16: bytes | None = None) -> str:
        """What WeCom sends (used by the fake server in the tests, and to answer passive replies)."""
        body = message.encode()
        plain = (random16 or os.urandom(16)) + struct.pack(">I", len(body)) + body + (receiver or self.corp_id).encode()
        pad = _BLOCK - len(plain) % _BLOCK
        plain += bytes([pad]) * pad
        key = self._key
        enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
        return base64.b64encode(enc.update(plain) + enc.finalize()).decode()

    def verify(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str,
               *, now: float | None = None) -> None:
        """Refuses a signature that does not match or a timestamp outside ``max_skew_s`` of now."""
        expected = signature(self.token, timestamp, nonce, encrypted)
        if not hmac.compare_digest(expected, (msg_signature or "").lower()):
            raise CallbackRefused("bad signature")
        try:
            sent = float(timestamp)
        except ValueError:
            raise CallbackRefused("bad timestamp") from None
        if abs((time.time() if now is None else now) - sent) > self.max_skew_s:
            raise CallbackRefused("timestamp too old or in the future (replay?)")

    def decrypt(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str,
                *, now: float | None = None) -> str:
        """The message WeCom sent, once signature, padding, length and corp id all check out."""
        self.verify(msg_signature, timestamp, nonce, encrypted, now=now)
        try:
            data = base64.b64decode(encrypted, validate=True)
        except ValueError:
            raise CallbackRefused("bad base64") from None
        if not data or len(data) % 16:
            raise CallbackRefused("bad ciphertext length")
        key = self._key
        dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        plain = dec.update(data) + dec.finalize()
        pad = plain[-1]
        if not 1 <= pad <= _BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise CallbackRefused("bad padding")
        plain = plain[:-pad]
        if len(plain) < 20:
            raise CallbackRefused("message too short")
        (length,) = struct.unpack(">I", plain[16:20])
        if 20 + length > len(plain):
            raise CallbackRefused("bad message length")
        message, receiver = plain[20:20 + length], plain[20 + length:]
        if not hmac.compare_digest(receiver, self.corp_id.encode()):
            raise CallbackRefused("the message is for another corp id")
        try:
            return message.decode()
        except UnicodeDecodeError:
            raise CallbackRefused("message is not UTF-8") from None
