"""The agreement in a case bundle, checked offline (the members collector/agreements/evidence.py writes).

Never imports the collector. Uses cryptography and asn1crypto; pyHanko, when importable, re-validates the
signed PDF's embedded signature. What is checked:

- ``record.json`` reads, and ``agreement.txt`` is the text whose SHA-256 the record's version names;
- a PDF: ``signed.pdf`` has the record's SHA-256; the verdict at import (``validation.json``) says valid;
  re-validated with pyHanko its signature is intact, covers the whole file and was made by the certificate
  the verdict names (trust in that certificate is the verdict's: the trust roots are the operator's);
- an acknowledgement: ``acknowledgement.json`` has the record's SHA-256 and names the version's text hash
  and the employee; ``timestamp.tsr`` is a granted RFC 3161 response whose TSTInfo imprints the
  SHA-256 of ``acknowledgement.json``, whose signed attributes hold the digest of that TSTInfo, and whose
  signature verifies under the TSA certificate included in the token (extended key usage timeStamping);
- ``notice.json``: the notice text hashes to its SHA-256, and its acknowledgement's seal holds the same way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from typing import Any, Mapping

__all__ = ["check_agreement", "describe", "check_timestamp"]

_HASHES = {"sha256": "SHA256", "sha384": "SHA384", "sha512": "SHA512", "sha224": "SHA224", "sha1": "SHA1"}


def _json(members: Mapping[str, bytes], name: str) -> dict[str, Any] | None:
    try:
        found = json.loads(members[name].decode("utf-8"))
    except (KeyError, UnicodeDecodeError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_timestamp(tsr: bytes, document: bytes) -> tuple[list[str], str]:
    """Problems with an RFC 3161 response as a seal over ``document`` (empty: it holds), and its time (ISO)."""
    try:
        return _check_timestamp(tsr, document)
    except Exception as exc:  # a flipped byte can land anywhere in the DER: each is a finding, never a crash
        return [f"the timestamp is malformed ({type(exc).__name__})"], ""


def _check_timestamp(tsr: bytes, document: bytes) -> tuple[list[str], str]:
    from asn1crypto import cms, tsp
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        resp = tsp.TimeStampResp.load(tsr)
        status = resp["status"]["status"].native
        token = resp["time_stamp_token"]
        signed: cms.SignedData = token["content"]
        info = signed["encap_content_info"]["content"].parsed
        imprint = info["message_imprint"]
        signer = signed["signer_infos"][0]
        when = info["gen_time"].native
    except Exception as exc:  # asn1crypto raises several kinds on malformed input
        return [f"the timestamp is not an RFC 3161 response ({type(exc).__name__})"], ""
    if status not in ("granted", "granted_with_mods"):
        return [f"the timestamp authority did not grant it ({status})"], ""
    problems: list[str] = []
    algo = imprint["hash_algorithm"]["algorithm"].native
    if algo != "sha256" or imprint["hashed_message"].native != hashlib.sha256(document).digest():
        problems.append("the timestamp imprints another document than acknowledgement.json")
    digest_algo = signer["digest_algorithm"]["algorithm"].native
    if digest_algo not in _HASHES:
        return problems + [f"the timestamp uses an unknown digest {digest_algo}"], ""
    h = getattr(hashes, _HASHES[digest_algo])()
    content = signed["encap_content_info"]["content"].contents
    attrs = signer["signed_attrs"]
    md = [a["values"][0].native for a in attrs if a["type"].native == "message_digest"]
    calc = hashlib.new(digest_algo, content).digest()
    if md != [calc]:
        problems.append("the timestamp's signed attributes do not hold the digest of its TSTInfo")
    sid = signer["sid"]
    certs = [c.chosen for c in signed["certificates"] or [] if c.name == "certificate"]
    cert_asn = None
    for c in certs:
        if sid.name == "issuer_and_serial_number":
            if c.issuer == sid.chosen["issuer"] and c.serial_number == sid.chosen["serial_number"].native:
                cert_asn = c
        elif c.key_identifier == sid.chosen.native:
            cert_asn = c
    if cert_asn is None:
        return problems + ["the timestamp does not include the TSA's certificate"], ""
    cert = x509.load_der_x509_certificate(cert_asn.dump())
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.TIME_STAMPING not in eku:
            problems.append("the TSA's certificate is not for time stamping")
    except x509.ExtensionNotFound:
        problems.append("the TSA's certificate is not for time stamping")
    key = cert.public_key()
    signed_bytes = attrs.untag().dump()
    sig = signer["signature"].native
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, signed_bytes, padding.PKCS1v15(), h)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, signed_bytes, ec.ECDSA(h))
        else:
            problems.append("the TSA's key is of a kind this verifier does not know")
    except InvalidSignature:
        problems.append("the timestamp's signature does not verify under the TSA certificate it includes")
    return problems, when.astimezone(dt.timezone.utc).isoformat() if when else ""


def _pdf_problems(pdf: bytes, verdict: Mapping[str, Any]) -> list[str]:
    try:
        from pyhanko.pdf_utils.reader import PdfFileReader
        from pyhanko.sign.validation import validate_pdf_signature
        from pyhanko_certvalidator import ValidationContext
    except ImportError:  # pragma: no cover - pyHanko is optional here
        return []
    try:
        sigs = PdfFileReader(io.BytesIO(pdf), strict=False).embedded_signatures
        if not sigs:
            return ["signed.pdf holds no signature"]
        # integrity only, offline: trust in the signer is the import's verdict (its roots are the operator's)
        status = validate_pdf_signature(sigs[-1], ValidationContext(trust_roots=[], allow_fetching=False))
    except Exception as exc:
        return [f"signed.pdf's signature could not be re-validated ({type(exc).__name__})"]
    problems = []
    if not (status.intact and status.valid):
        problems.append("signed.pdf's signature does not verify: the document was changed after signing")
    if status.coverage is None or status.coverage.name != "ENTIRE_FILE":
        problems.append("signed.pdf's signature does not cover the whole file")
    if hashlib.sha256(status.signing_cert.dump()).hexdigest() != verdict.get("signer_sha256"):
        problems.append("signed.pdf is signed by another certificate than validation.json names")
    return problems


def _same_time(ns: Any, iso: Any) -> bool:
    try:
        when = dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return False
    return isinstance(ns, int) and abs(ns / 1e9 - when.timestamp()) < 1.0


def check_agreement(members: Mapping[str, bytes]) -> list[str]:
    """What does not hold in the agreement's members (empty: everything holds)."""
    record = _json(members, "record.json")
    if record is None:
        return ["record.json is missing or not JSON"]
    problems: list[str] = []
    version = record.get("version") or {}
    text = members.get("agreement.txt")
    if text is None:
        problems.append("agreement.txt is missing")
    elif _sha(text) != version.get("sha256"):
        problems.append("agreement.txt is not the text of the version on record (SHA-256 differs)")
    if record.get("source") == "pdf":
        pdf = members.get("signed.pdf")
        verdict = _json(members, "validation.json")
        if pdf is None or verdict is None:
            return problems + ["signed.pdf or validation.json is missing"]
        if _sha(members["validation.json"]) != record.get("validation_sha256"):
            problems.append("validation.json is not the verdict on record (SHA-256 differs)")
        if _sha(pdf) != record.get("document_sha256"):
            problems.append("signed.pdf is not the file on record (SHA-256 differs)")
        if not (verdict.get("valid") and record.get("valid")):
            problems.append(f"the PDF's signature was not valid at import: {verdict.get('reason', '')}")
        if not _same_time(record.get("signed_at_ns"), verdict.get("timestamp_time") or verdict.get("signing_time")):
            problems.append("record.json's signing time is not the PDF's timestamp")
        problems += _pdf_problems(pdf, verdict)
    elif record.get("source") == "acknowledgement":
        body = members.get("acknowledgement.json")
        ack = _json(members, "acknowledgement.json")
        if body is None or ack is None:
            return problems + ["acknowledgement.json is missing or not JSON"]
        if _sha(body) != record.get("document_sha256"):
            problems.append("acknowledgement.json is not the acknowledgement on record (SHA-256 differs)")
        if ack.get("text_sha256") != version.get("sha256"):
            problems.append("the acknowledgement names another text than the version on record")
        if ack.get("employee_id") != record.get("employee_id"):
            problems.append("the acknowledgement is another employee's")
        if not _same_time(record.get("signed_at_ns"), ack.get("acknowledged_at")):
            problems.append("record.json's signing time is not the acknowledgement's")
        tsr = members.get("timestamp.tsr")
        if tsr is None:
            problems.append("the acknowledgement is not timestamped (timestamp.tsr is missing)")
        else:
            problems += check_timestamp(tsr, body)[0]
    else:
        problems.append(f"record.json names an unknown source {str(record.get('source'))[:20]!r}")
    problems += _notice_problems(members)
    return problems


def _notice_problems(members: Mapping[str, bytes]) -> list[str]:
    if "notice.json" not in members:  # no notice acknowledged: nothing of it may be there either
        stray = sorted(n for n in members if n.startswith("notice-"))
        return [f"{', '.join(stray)} without notice.json"] if stray else []
    notice = _json(members, "notice.json")
    if notice is None:
        return ["notice.json is not JSON"]
    problems = []
    if _sha(str(notice.get("text", "")).encode("utf-8")) != notice.get("text_sha256"):
        problems.append("notice.json's text is not the one its SHA-256 names")
    ack_body = members.get("notice-acknowledgement.json", b"")
    ack = _json(members, "notice-acknowledgement.json")
    if ack is None or ack.get("text_sha256") != notice.get("text_sha256"):
        problems.append("the notice's acknowledgement names another text")
    tsr = members.get("notice-timestamp.tsr")
    if notice.get("sealed") and tsr is None:
        problems.append("the notice's acknowledgement says sealed but notice-timestamp.tsr is missing")
    if tsr is not None:
        problems += [f"notice: {p}" for p in check_timestamp(tsr, ack_body)[0]]
    return problems


def _ns_iso(ns: Any) -> str:
    if not isinstance(ns, int) or ns <= 0:
        return "—"
    return dt.datetime.fromtimestamp(ns // 10**9, dt.timezone(dt.timedelta(hours=8))).isoformat()


def describe(members: Mapping[str, bytes], lang: str) -> list[str]:
    """Readable lines about the agreement, in Chinese ("zh") or English."""
    record = _json(members, "record.json") or {}
    version = record.get("version") or {}
    title = (record.get("template") or {}).get("title", "")
    zh = lang == "zh"
    lines = [(f"协议：{title} {version.get('name', '')}（文本 SHA-256 {str(version.get('sha256', ''))[:16]}…），"
              f"员工 {record.get('employee_id', '')}，签署时间 {_ns_iso(record.get('signed_at_ns'))}，"
              f"身份核验：{record.get('identity_check', '')}") if zh else
             (f"Agreement: {title} {version.get('name', '')} (text SHA-256 {str(version.get('sha256', ''))[:16]}…), "
              f"employee {record.get('employee_id', '')}, signed {_ns_iso(record.get('signed_at_ns'))}, "
              f"identity verified by: {record.get('identity_check', '')}")]
    if record.get("source") == "pdf":
        v = _json(members, "validation.json") or {}
        lines.append((f"电子签名平台 {record.get('platform', '')}（存证编号 {record.get('evidence_ref', '')}）；"
                      f"签署人证书：{v.get('signer_subject', '')}；时间戳机构：{v.get('tsa_subject', '')}，"
                      f"{v.get('timestamp_time', '')}；导入时验证：{'有效' if v.get('valid') else '无效'}") if zh else
                     (f"e-signature platform {record.get('platform', '')} (evidence {record.get('evidence_ref', '')}); "
                      f"signer certificate: {v.get('signer_subject', '')}; timestamp authority: "
                      f"{v.get('tsa_subject', '')} at {v.get('timestamp_time', '')}; at import: "
                      f"{'valid' if v.get('valid') else 'NOT valid'}"))
    elif record.get("source") == "acknowledgement":
        when = check_timestamp(members["timestamp.tsr"], members.get("acknowledgement.json", b""))[1] \
            if "timestamp.tsr" in members else ""
        lines.append((f"员工在守密系统内登录并确认，RFC 3161 时间戳 {when or '缺失'}") if zh else
                     (f"acknowledged in Shoumi by the signed-in employee, RFC 3161 timestamp {when or 'missing'}"))
    notice = _json(members, "notice.json")
    if notice:
        lines.append((f"员工监控告知书 {notice.get('version', '')}（SHA-256 {str(notice.get('text_sha256', ''))[:16]}…）"
                      f"{'已确认并加盖时间戳' if notice.get('sealed') else '已确认，尚未加盖时间戳'}") if zh else
                     (f"monitoring notice {notice.get('version', '')} (SHA-256 "
                      f"{str(notice.get('text_sha256', ''))[:16]}…) acknowledged"
                      f"{', timestamped' if notice.get('sealed') else ', not yet timestamped'}"))
    return lines
