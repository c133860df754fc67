"""Pseudonym codes: pure functions of an installation secret and a user name. No I/O, no storage.

A code is ``P-`` and the first 50 bits of HMAC-SHA256(secret, "pseudonym\\0" + name) in Crockford
base32 (10 characters, no I, L, O or U). Collisions: among n people the chance that any two share a
code is about n² / 2^51; for 100,000 people that is 1e10 / 2.25e15 ≈ 4.4e-6 (one installation in
about 225,000). Should it happen anyway, the second person gets the long code (100 bits, 20
characters): ``privacy.service.register`` checks the table before it hands one out.
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["PREFIX", "code_for", "parse", "mask"]

PREFIX = "P-"
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_SHORT_BITS, _LONG_BITS = 50, 100
# what people may type for a pseudonym: the code, or a page's label before it
_LABELS = ("员工-", "员工", "EMPLOYEE-", "P-", "P")
_CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{10}(?:[0-9A-HJKMNP-TV-Z]{10})?$")


def code_for(secret: bytes, user_name: str, *, long: bool = False) -> str:
    """The pseudonym of a user name under an installation secret ("" for no user)."""
    if not user_name:
        return ""
    digest = hmac.new(secret, b"pseudonym\x00" + user_name.encode("utf-8"), hashlib.sha256).digest()
    bits = _LONG_BITS if long else _SHORT_BITS
    value = int.from_bytes(digest, "big") >> (256 - bits)
    chars = [_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(bits // 5))]
    return PREFIX + "".join(chars)


def parse(text: str) -> str | None:
    """Reads a pseudonym as typed (``P-7K3M9QX2PA``, ``员工-7K3M9QX2PA``, lower case, O for 0) into its code."""
    t = text.strip().upper()
    for label in _LABELS:
        if t.startswith(label):
            t = t[len(label):]
            break
    t = t.replace("O", "0").replace("I", "1").replace("L", "1")  # Crockford's reading of look-alikes
    return PREFIX + t if _CODE.match(t) else None


def mask(text: str, user_name: str, code: str) -> str:
    """Replaces a user name where it stands as a word (a sentence, a home folder, a host name) by its code."""
    if not user_name or not text or user_name not in text:
        return text
    return re.sub(rf"(?<![\w.-]){re.escape(user_name)}(?![\w])", code, text)
