"""Pseudonyms of people and the audited reveal of a real name; work inside the caller's transaction.

Every person an alert names has a row (code → user name) once ``register`` ran for them
(``alerts.service.raise_alert`` does, for each new alert), so a pseudonym can be filtered on and
revealed. ``pseudonym_of`` never writes: it reads the row, or computes the code from the secret.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from collector.audit.models import AuditEntry
from collector.privacy.codes import code_for, parse
from collector.storage.base import AuditArea, PrivacyArea

__all__ = ["PrivacyError", "pseudonym_of", "pseudonyms_of", "register", "user_of", "reveal",
           "REASON_MIN", "REASON_MAX"]

REASON_MIN, REASON_MAX = 10, 500


class PrivacyError(Exception):
    """A reveal that is not allowed or not possible; ``status`` is an HTTP status hint."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def pseudonym_of(*, tx: PrivacyArea, user_name: str) -> str:
    """The stable pseudonym of a person, e.g. ``P-7K3M9QX2PA`` ("" for no person)."""
    return pseudonyms_of(tx=tx, user_names=[user_name]).get(user_name, "")


def pseudonyms_of(*, tx: PrivacyArea, user_names: Sequence[str]) -> dict[str, str]:
    """The pseudonyms of several people at once (one read), by user name."""
    names = sorted({n for n in user_names if n})
    if not names:
        return {}
    known = dict(tx.pseudonyms_for(names))
    missing = [n for n in names if n not in known]
    if missing:
        secret = tx.pseudonym_secret()
        known.update({n: code_for(secret, n) for n in missing})
    return known


def register(*, tx: PrivacyArea, user_name: str, now_ns: int) -> str:
    """Records a person's pseudonym so it can be filtered on and revealed; the long code on a collision."""
    if not user_name:
        return ""
    known = tx.pseudonyms_for([user_name])
    if user_name in known:
        return known[user_name]
    secret = tx.pseudonym_secret()
    for code in (code_for(secret, user_name), code_for(secret, user_name, long=True)):
        if tx.add_pseudonym(code=code, user_name=user_name, now_ns=now_ns):
            return code
        again = tx.pseudonyms_for([user_name])  # another collector registered the same person meanwhile
        if user_name in again:
            return again[user_name]
    raise AssertionError(f"two 100-bit pseudonym collisions for one person ({len(user_name)} characters)")


def user_of(*, tx: PrivacyArea, pseudonym: str) -> str | None:
    """The user name behind a pseudonym as typed, or None when no person has it (no audit: not shown)."""
    code = parse(pseudonym)
    return None if code is None else tx.user_for_pseudonym(code)


class _RevealTx(PrivacyArea, AuditArea, Protocol):
    """What revealing needs."""


def reveal(*, tx: _RevealTx, pseudonym: str, reason: str, actor: str, now_ns: int) -> str:
    """Returns the real name behind a pseudonym and audits who asked and why (not the name itself)."""
    why = " ".join(reason.split())
    if not REASON_MIN <= len(why) <= REASON_MAX:
        raise PrivacyError(422, f"a reveal needs a reason of {REASON_MIN} to {REASON_MAX} characters")
    code = parse(pseudonym)
    if code is None:
        raise PrivacyError(422, f"{pseudonym[:40]!r} is not a pseudonym (P- and 10 or 20 letters and digits)")
    name = tx.user_for_pseudonym(code)
    if name is None:
        raise PrivacyError(404, f"no person has the pseudonym {code}")
    # the audit log is read by auditors: it names the pseudonym and the reason, never the name
    tx.append_audit(AuditEntry(now_ns, actor, "identity.reveal", code, {"reason": why}))
    return name
