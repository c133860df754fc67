"""Exporting a case's evidence bundle: built, sealed and audited in the caller's transaction.

``export_case`` reads the case's members (collector/evidence/bundle.py), runs shoumi-verify's own checks
over them (a bundle that does not verify is not handed out: 409), adds the arbitrator's PDF report
(collector/evidence/report.py) with what those checks found, seals the manifest with the collector's
tree-head key and writes one audit row (``evidence.export``: who, which case, the bundle's SHA-256
and size) in the same transaction. ``EvidenceKeys.load`` reads the keys from the data directory.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.audit.models import AuditEntry
from collector.evidence.bundle import EvidenceError, WitnessKey, case_members, seal, zip_bytes
from collector.pki import CertificateAuthority
from collector.storage.base import Transaction

__all__ = ["EvidenceKeys", "Exported", "export_case", "EvidenceError"]

log = logging.getLogger("shoumi.collector.evidence")


@dataclass(frozen=True)
class EvidenceKeys:
    """What sealing a bundle needs: the tree-head key, the CA, and the witnesses the collector knows."""

    tree_key: Ed25519PrivateKey
    ca: CertificateAuthority
    witnesses: tuple[WitnessKey, ...] = ()

    @classmethod
    def load(cls, data_dir: Path, witnesses: Sequence[WitnessKey] = ()) -> "EvidenceKeys":
        from collector.transparency import load_or_create_tree_key

        return cls(load_or_create_tree_key(data_dir), CertificateAuthority.load_or_create(data_dir), tuple(witnesses))


@dataclass(frozen=True)
class Exported:
    """A sealed bundle: the zip, its SHA-256 (hex) and the members in it."""

    zip: bytes
    sha256: str
    members: dict[str, bytes]


def _self_check(members: dict[str, bytes], key: Ed25519PrivateKey, *, case_id: int, now_ns: int) -> list[str]:
    """Runs shoumi-verify's checks over the sealed bundle before it leaves; raises EvidenceError if one fails."""
    from shoumi_verify.check import Failed, verify_bundle
    from shoumi_verify.texts import text

    try:
        report = verify_bundle(seal(members, key=key, case_id=case_id, now_ns=now_ns), lang="zh")
    except Failed as exc:
        log.error("the bundle of case %s does not verify: %s %s", case_id, exc.code, exc.detail)
        raise EvidenceError(409, f"the bundle does not verify ({exc.code}: {text(exc.code, 'en', **exc.detail)}); "
                            "run shoumi-collector verify") from exc
    return [text(code, "zh", **detail) for code, detail in report.passed]


def export_case(tx: Transaction, case_id: int, *, keys: EvidenceKeys, actor: str, now_ns: int,
                prove_from: Sequence[int] = (), with_report: bool = True) -> Exported:
    """Builds and seals the bundle of one case and audits the export; raises EvidenceError."""
    public = keys.tree_key.public_key().public_bytes_raw()
    members = case_members(tx, case_id, tree_public_key=public, ca=keys.ca, witnesses=keys.witnesses,
                           prove_from=prove_from, now_ns=now_ns)
    checked = _self_check(members, keys.tree_key, case_id=case_id, now_ns=now_ns)
    if with_report:
        from collector.evidence.report import report_pdf

        members["report.pdf"] = report_pdf(members, checked=checked)
    sealed = seal(members, key=keys.tree_key, case_id=case_id, now_ns=now_ns)
    data = zip_bytes(sealed)
    digest = hashlib.sha256(data).hexdigest()
    tx.append_audit(AuditEntry(now_ns, actor, "evidence.export", str(case_id),
                               {"sha256": digest, "size": len(data), "members": len(sealed)}))
    log.info("case %s exported: %d members, %d bytes, sha256 %s", case_id, len(sealed), len(data), digest)
    return Exported(data, digest, sealed)
