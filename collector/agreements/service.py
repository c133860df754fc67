"""Agreements on record: the registry, signed PDFs, acknowledgements and their seals. In the caller's transaction.

Slow work is done outside any transaction: ``validate_pdf`` (pyHanko) runs before ``import_pdf`` records
its result, and ``request_timestamp`` (an HTTP call to the TSA) before ``save_seal`` records the token.
Every action writes its audit row in the same transaction as the action.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from collector.agreements.models import (PLATFORMS, Employee, Platform, SignedRecord, Source, Template, TemplateKind,
                                         Version, backs_deduction, canonical, text_sha256)
from collector.audit.models import AuditEntry
from collector.storage.base import AgreementArea, AlreadyExists, AuditArea, PeopleArea, Store

__all__ = ["AgreementError", "AgreementConfig", "load_config", "add_template", "add_version", "link_employee",
           "validate_pdf", "import_pdf", "acknowledge", "seal_pending", "request_timestamp", "check_token",
           "current_versions", "offers_for_case", "record_for_case", "session_hash", "TsaUnavailable", "CHINA"]

log = logging.getLogger("shoumi.collector.agreements")

CHINA = timezone(timedelta(hours=8))
MAX_TEXT = 200_000
_EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # as collector/cases/hr.py reads a payroll id
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class AgreementError(Exception):
    """A request that cannot be carried out; ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TsaUnavailable(Exception):
    """The timestamp authority could not be reached or gave no good token."""


class _Tx(AgreementArea, AuditArea, PeopleArea, Protocol):
    """What the agreements feature needs of a transaction."""


@dataclass(frozen=True)
class AgreementConfig:
    """The feature's settings, certificates read (DER)."""

    trust_roots: tuple[bytes, ...] = ()
    tsa_url: str | None = None
    tsa_ca: bytes | None = None
    tsa_timeout_seconds: float = 10.0
    seal_retry_seconds: float = 60.0
    max_upload_bytes: int = 10 * 1024 * 1024


def _pem_certs(path: Path) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(path.read_bytes())]


def load_config(settings: Any) -> AgreementConfig:
    """Reads the CA certificate files named in ``AgreementSettings``; a file that is not PEM stops the start."""
    roots: list[bytes] = []
    for path in settings.trust_roots:
        roots += _pem_certs(Path(path))
    tsa_ca = _pem_certs(Path(settings.tsa_ca_file))[0] if settings.tsa_ca_file else None
    if settings.tsa_url and tsa_ca is None:
        raise ValueError("agreements.tsa_url needs agreements.tsa_ca_file: tokens are checked before they count")
    return AgreementConfig(tuple(roots), settings.tsa_url, tsa_ca, settings.tsa_timeout_seconds,
                           settings.seal_retry_seconds, settings.max_upload_bytes)


def _clean(value: Any, *, label: str, max_len: int, required: bool = True, multiline: bool = False) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        if required:
            raise AgreementError(422, f"{label} is missing")
        return ""
    if len(text) > max_len:
        raise AgreementError(422, f"{label} is longer than {max_len} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from JSON: no database stores it
        raise AgreementError(422, f"{label} is not valid Unicode text") from exc
    allowed = {"\n", "\r", "\t"} if multiline else set()
    if any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text):
        raise AgreementError(422, f"{label} holds control characters")
    bidi = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"}
    if any(ch in bidi for ch in text):
        raise AgreementError(422, f"{label} holds bidirectional override characters")
    return text


def _audit(tx: _Tx, now_ns: int, actor: str, action: str, target: str, details: Mapping[str, Any]) -> None:
    tx.append_audit(AuditEntry(now_ns, actor, action, target, dict(details)))


# --- the registry -------------------------------------------------------------------------------------------

def add_template(*, tx: _Tx, title: str, kind: str, actor: str, now_ns: int) -> Template:
    """Adds a template (a confidentiality agreement or the monitoring notice)."""
    name = _clean(title, label="the title", max_len=200)
    if kind not in {k.value for k in TemplateKind}:
        raise AgreementError(422, f"the kind is one of {', '.join(k.value for k in TemplateKind)}")
    made = tx.add_agreement_template(Template(name, kind, actor, now_ns))
    _audit(tx, now_ns, actor, "agreement.template", str(made.id), {"title": name, "kind": kind})
    return made


def add_version(*, tx: _Tx, template_id: int, version: str, text: str, effective_from: str, actor: str,
                now_ns: int) -> Version:
    """Adds a version: its exact text is kept and hashed (SHA-256 of the UTF-8 bytes); 409 if the name is taken."""
    if tx.get_agreement_template(template_id) is None:
        raise AgreementError(404, f"no template {template_id}")
    name = _clean(version, label="the version", max_len=64)
    # browsers send a textarea's lines with CRLF: the text kept and hashed has LF line ends, whoever sent it
    body = _clean(text.replace("\r\n", "\n") if isinstance(text, str) else text, label="the text",
                  max_len=MAX_TEXT, multiline=True)
    day = _clean(effective_from, label="the effective date", max_len=10)
    try:
        if not _DATE.match(day):
            raise ValueError(day)
        date.fromisoformat(day)
    except ValueError as exc:
        raise AgreementError(422, f"the effective date is a day such as 2024-03-01 (got {day[:20]!r})") from exc
    try:
        made = tx.add_agreement_version(Version(template_id, name, body, text_sha256(body), day, actor, now_ns))
    except AlreadyExists as exc:
        raise AgreementError(409, f"this template already has a version {name!r}: versions are never rewritten") from exc
    _audit(tx, now_ns, actor, "agreement.version", str(made.id),
           {"template_id": template_id, "version": name, "sha256": made.sha256, "effective_from": day})
    return made


def link_employee(*, tx: _Tx, employee_id: str, user_name: str | None, account: str | None, actor: str,
                  now_ns: int) -> Employee:
    """Records an employee by payroll id, with the user name their events carry and their sign-in account."""
    emp = _clean(employee_id, label="the payroll employee id", max_len=64)
    if not _EMPLOYEE_ID.match(emp):
        raise AgreementError(422, "the payroll employee id is letters, digits, '.', '_' or '-' (as in the payroll)")
    who = _clean(user_name, label="the user name", max_len=128, required=False) or None
    acct = _clean(account, label="the account", max_len=128, required=False) or None
    if acct is not None:
        user = tx.get_user(acct)
        if user is None:
            raise AgreementError(422, f"no account {acct!r}: IT creates it first, with the role employee")
        if user.role != "employee":
            raise AgreementError(422, f"the account {acct!r} has the role {user.role}, not employee: an employee's "
                                      "account sees only their own notices")
    old = tx.get_agreement_employee(emp)
    made = Employee(emp, who, acct, actor, now_ns) if old is None else replace(old, user_name=who, account=acct)
    try:
        tx.put_agreement_employee(made)
    except AlreadyExists as exc:
        raise AgreementError(409, str(exc)) from exc
    # the audit log names the payroll id and whether an account is linked, never the real name
    _audit(tx, now_ns, actor, "agreement.employee", emp, {"account": acct, "user_linked": who is not None})
    return made


def current_versions(tx: AgreementArea, *, today: date) -> list[tuple[Template, Version]]:
    """The version in force today of each template (the newest whose effective date has come)."""
    out: list[tuple[Template, Version]] = []
    for t in tx.list_agreement_templates():
        due = [v for v in tx.list_agreement_versions(t.id or 0) if v.effective_from <= today.isoformat()]
        if due:
            out.append((t, max(due, key=lambda v: (v.effective_from, v.id or 0))))
    return out


# --- signed PDFs --------------------------------------------------------------------------------------------

def _fingerprint(cert: Any) -> str:
    return hashlib.sha256(cert.dump()).hexdigest()


def validate_pdf(content: bytes, trust_roots: Sequence[bytes]) -> dict[str, Any]:
    """pyHanko's verdict on the PDF's embedded signature and its timestamp, against these trust roots.

    Raises AgreementError(422) for something that is not a PDF or holds no signature; anything else is
    a verdict (``valid`` False with the ``reason``), never an exception.
    """
    if not content.lstrip()[:5] == b"%PDF-":
        raise AgreementError(422, "the file is not a PDF (it does not start with %PDF-)")
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    try:
        reader = PdfFileReader(io.BytesIO(content), strict=False)
        sigs = reader.embedded_signatures
    except (PdfError, ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:  # nested too deeply too
        raise AgreementError(422, f"the file is not a readable PDF ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if not sigs:
        raise AgreementError(422, "the PDF holds no signature: import the signed copy from the e-signature platform")
    roots = [asn1_x509.Certificate.load(r) for r in trust_roots]
    out: dict[str, Any] = {"valid": False, "reason": "", "signatures": len(sigs), "signer_subject": "",
                           "signer_sha256": "", "signing_time": None, "tsa_subject": "", "timestamp_time": None,
                           "coverage": "", "trust_roots": [hashlib.sha256(r).hexdigest() for r in trust_roots]}
    sig = sigs[-1]  # the last signature covers the most of the file
    try:
        def ctx() -> Any:
            return ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail")
        status = validate_pdf_signature(sig, ctx(), ctx())
    except Exception as exc:  # pyHanko raises many kinds for broken structures: each is a verdict here
        out["reason"] = f"the signature could not be validated: {type(exc).__name__}: {str(exc)[:200]}"
        return out
    cert = status.signing_cert
    out.update(signer_subject=cert.subject.human_friendly, signer_sha256=_fingerprint(cert),
               signing_time=status.signer_reported_dt.isoformat() if status.signer_reported_dt else None,
               coverage=status.coverage.name if status.coverage else "", summary=status.summary())
    ts = status.timestamp_validity
    if ts is not None:
        out.update(tsa_subject=ts.signing_cert.subject.human_friendly if ts.signing_cert else "",
                   timestamp_time=ts.timestamp.isoformat(), timestamp_trusted=bool(ts.intact and ts.valid and ts.trusted))
    reasons = []
    if not status.intact:
        reasons.append("the document was changed after it was signed (the signed digest does not match)")
    elif not status.valid:
        reasons.append("the signature does not verify under the signer's certificate")
    if status.intact and status.valid and not status.trusted:
        reasons.append("the signer's certificate does not chain to a configured trust root "
                       "(agreements.trust_roots)")
    if status.coverage is not None and status.coverage.name != "ENTIRE_FILE" and status.intact:
        reasons.append("the signature does not cover the whole file (content was added after signing)")
    if ts is None:
        reasons.append("the signature carries no RFC 3161 timestamp: the signing time is only the signer's claim")
    elif not (ts.intact and ts.valid and ts.trusted):
        reasons.append("the signature's timestamp does not verify under a configured trust root")
    out["valid"] = not reasons and bool(status.bottom_line)
    out["reason"] = "; ".join(reasons) if reasons else ("" if out["valid"] else status.summary())
    return out


def _ns_of(iso: str | None) -> int:
    if not iso:
        return 0
    when = datetime.fromisoformat(iso)
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


def import_pdf(*, tx: _Tx, employee_id: str, version_id: int, content: bytes, validation: Mapping[str, Any],
               platform: str, evidence_ref: str, identity_check: str, actor: str, now_ns: int) -> SignedRecord:
    """Records a signed PDF with pyHanko's verdict (valid or not: an invalid one is kept, and backs nothing)."""
    if tx.get_agreement_employee(employee_id) is None:
        raise AgreementError(404, f"no employee {employee_id[:64]!r} on record: add them first")
    version = tx.get_agreement_version(version_id)
    if version is None:
        raise AgreementError(404, f"no agreement version {version_id}")
    if platform not in PLATFORMS or platform == Platform.IN_PRODUCT.value:
        raise AgreementError(422, "the platform is one of " + ", ".join(p for p in PLATFORMS if p != "in_product"))
    ref = _clean(evidence_ref, label="the platform's evidence reference", max_len=200)
    how = _clean(identity_check, label="how the signer's identity was verified", max_len=500)
    when = validation.get("timestamp_time") or validation.get("signing_time")
    made = tx.add_signed_record(SignedRecord(
        employee_id, version_id, Source.PDF.value, platform, ref, _ns_of(when), how,
        hashlib.sha256(content).hexdigest(), actor, now_ns, bool(validation.get("valid")), dict(validation)), content)
    _audit(tx, now_ns, actor, "agreement.import", str(made.id),
           {"employee_id": employee_id, "version_id": version_id, "sha256": made.document_sha256,
            "valid": made.valid, "reason": validation.get("reason", ""), "platform": platform})
    return made


# --- in-product acknowledgements and their RFC 3161 seals ---------------------------------------------------

def session_hash(session_token: str) -> str:
    """The session an acknowledgement was made in, as a hash (the token itself is a credential)."""
    return hashlib.sha256(b"shoumi-session\x00" + session_token.encode("utf-8")).hexdigest()


def signed_in_how(provider: str | None, *, api_token: bool) -> str:
    """How the acknowledging employee was identified, in the record's words (the identity check of the evidence)."""
    method = {"oidc": "OpenID Connect", "ldap": "LDAP", "wecom": "WeCom"}.get(provider or "", "password")
    return f"{method}, {'API token' if api_token else 'browser session'}"


def acknowledge(*, tx: _Tx, account: str, version_id: int, shown_sha256: str, session_token: str,
                now_ns: int, signed_in_with: str = "password, browser session") -> SignedRecord:
    """Records that the signed-in employee acknowledged the exact text they were shown (not yet timestamped);
    ``signed_in_with`` says how they were identified (``signed_in_how``)."""
    employee = tx.agreement_employee_for_account(account)
    if employee is None:
        raise AgreementError(409, "this account is not linked to an employee on record: ask HR")
    version = tx.get_agreement_version(version_id)
    if version is None:
        raise AgreementError(404, f"no agreement version {version_id}")
    if version.effective_from > datetime.fromtimestamp(now_ns / 1e9, CHINA).date().isoformat():
        raise AgreementError(409, f"version {version.version} takes effect on {version.effective_from}, not yet")
    if shown_sha256 != version.sha256:
        raise AgreementError(409, "the text changed since the page was shown: read it again, then acknowledge")
    for earlier in tx.signed_records(employee.employee_id):  # the first is the proof: no new row, no TSA request
        if earlier.version_id == version.id and earlier.source == Source.ACKNOWLEDGEMENT.value:
            return earlier
    template = tx.get_agreement_template(version.template_id)
    assert template is not None
    when = datetime.fromtimestamp(now_ns // 10**9, CHINA).replace(microsecond=(now_ns // 1000) % 10**6)
    doc: dict[str, Any] = {"type": "shoumi.acknowledgement/1", "employee_id": employee.employee_id, "account": account,
           "template": {"id": template.id, "title": template.title, "kind": template.kind},
           "version": {"id": version.id, "name": version.version, "effective_from": version.effective_from},
           "text_sha256": version.sha256, "acknowledged_at": when.isoformat(), "session": session_hash(session_token),
           "statement": "我已阅读并知悉上述全部内容。I have read and understood the text above."}
    body = canonical(doc)
    made = tx.add_signed_record(SignedRecord(
        employee.employee_id, version.id or 0, Source.ACKNOWLEDGEMENT.value, Platform.IN_PRODUCT.value,
        f"shoumi-ack:{hashlib.sha256(body).hexdigest()[:16]}", now_ns,
        f"signed in to Shoumi as {account} ({signed_in_with} {doc['session'][:12]})",
        hashlib.sha256(body).hexdigest(), account, now_ns, True, {"text_sha256": version.sha256},
        session_hash=doc["session"], next_seal_ns=now_ns), body)
    _audit(tx, now_ns, account, "agreement.acknowledge", str(made.id),
           {"employee_id": employee.employee_id, "version_id": version.id, "text_sha256": version.sha256})
    return made


def request_timestamp(cfg: AgreementConfig, digest: bytes) -> bytes:
    """Asks the TSA to timestamp a SHA-256 digest; returns the DER TimeStampResp, checked. Raises TsaUnavailable."""
    if not cfg.tsa_url or cfg.tsa_ca is None:
        raise TsaUnavailable("no timestamp authority is configured (agreements.tsa_url, agreements.tsa_ca_file)")
    import httpx
    from asn1crypto import tsp
    from pyhanko.sign.timestamps.api import TimeStamper
    from pyhanko.sign.timestamps.common_utils import TimestampRequestError, handle_tsp_response

    from collector.evidence.witnesses import bounded_post

    nonce, req = TimeStamper().request_cms(digest, "sha256")  # type: ignore[no-untyped-call]
    try:  # the HTTP transport of RFC 3161 (section 3.4): POST the DER request, read the DER response
        with httpx.Client(timeout=cfg.tsa_timeout_seconds) as client:  # the whole answer within 2x the timeout
            answer, content = bounded_post(client, cfg.tsa_url, content=req.dump(), total_s=2 * cfg.tsa_timeout_seconds,
                                           headers={"Content-Type": "application/timestamp-query"})
        if answer.status_code != 200 or answer.headers.get("content-type", "") != "application/timestamp-reply":
            raise TsaUnavailable(f"the timestamp authority answered HTTP {answer.status_code} "
                                 f"({answer.headers.get('content-type', '')[:60]})")
        resp = tsp.TimeStampResp.load(content)
        handle_tsp_response(resp, nonce)
    except TsaUnavailable:
        raise
    except (httpx.HTTPError, TimestampRequestError, ValueError, KeyError, TypeError) as exc:  # malformed answers too
        raise TsaUnavailable(f"the timestamp authority did not answer with a token: {str(exc)[:160]}") from exc
    der = bytes(resp.dump())
    problems = check_token(der, digest, cfg.tsa_ca)
    if problems:
        raise TsaUnavailable("the timestamp authority's token does not hold: " + "; ".join(problems))
    return der


def check_token(tsr: bytes, digest: bytes, tsa_ca: bytes | None) -> list[str]:
    """What is wrong with a TimeStampResp as a seal over ``digest`` under the TSA's CA (empty: it holds)."""
    from asn1crypto import tsp
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
    from pyhanko_certvalidator import ValidationContext

    try:
        resp = tsp.TimeStampResp.load(tsr)
        token = resp["time_stamp_token"]
        signed = token["content"]
        info = signed["encap_content_info"]["content"].parsed
    except Exception as exc:  # asn1crypto raises ValueError and others on malformed input
        return [f"the timestamp is not an RFC 3161 response ({type(exc).__name__})"]
    if resp["status"]["status"].native not in ("granted", "granted_with_mods"):
        return ["the timestamp authority refused the request"]
    roots = [asn1_x509.Certificate.load(tsa_ca)] if tsa_ca else []
    try:
        status = asyncio.run(validate_tst_signed_data(
            signed, ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail"),
            lambda algo: digest if algo == "sha256" else b""))
    except Exception as exc:
        return [f"the timestamp token could not be validated: {type(exc).__name__}: {str(exc)[:160]}"]
    problems = []
    if info["message_imprint"]["hashed_message"].native != digest:
        problems.append("the timestamp is over another document than the acknowledgement")
    if not status.get("intact") or not status.get("valid"):
        problems.append("the timestamp token's signature does not verify")
    if status.get("trust_problem_indic") is not None or not roots:
        problems.append("the timestamp authority's certificate does not chain to the configured TSA CA")
    return problems


def _token_time_ns(tsr: bytes) -> int:
    from asn1crypto import tsp

    gen = tsp.TimeStampResp.load(tsr)["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed[
        "gen_time"].native
    return int(gen.timestamp()) * 10**9 + int(gen.microsecond) * 1000


def seal_one(*, store: Store, cfg: AgreementConfig, record_id: int, now: Callable[[], int]) -> str:
    """Tries to timestamp one acknowledgement now: 'sealed', 'pending' (with the reason kept) or 'done' already."""
    with store.read() as tx:
        record = tx.get_signed_record(record_id)
        body = tx.signed_document(record_id)
    if record is None or body is None:
        raise AgreementError(404, f"no record {record_id}")
    if record.tsr is not None:
        return "done"
    digest = hashlib.sha256(body).digest()
    try:
        tsr: bytes | None = request_timestamp(cfg, digest)
        error = ""
    except TsaUnavailable as exc:
        tsr, error = None, str(exc)
    at = now()
    attempts = record.seal_attempts + 1
    wait = min(cfg.seal_retry_seconds * (2 ** min(attempts - 1, 6)), 3600.0)
    with store.transaction() as tx:
        sealed_at = _token_time_ns(tsr) if tsr is not None else None
        if not tx.save_seal(record_id=record_id, tsr=tsr, sealed_at_ns=sealed_at, attempts=attempts, error=error,
                            next_seal_ns=0 if tsr is not None else at + int(wait * 1e9)):
            return "done"
        _audit(tx, at, "system", "agreement.seal" if tsr is not None else "agreement.seal_failed", str(record_id),
               {"attempt": attempts, "error": error[:300]} if tsr is None else {"attempt": attempts,
                                                                                 "tsr_sha256": hashlib.sha256(tsr).hexdigest()})
    if tsr is None:
        log.warning("acknowledgement %s not timestamped (attempt %d): %s", record_id, attempts, error)
    return "sealed" if tsr is not None else "pending"


def seal_pending(*, store: Store, cfg: AgreementConfig, now: Callable[[], int], limit: int = 50) -> int:
    """The periodic job: timestamps acknowledgements still unsealed whose retry is due; returns how many got sealed."""
    if not cfg.tsa_url:
        return 0
    with store.read() as tx:
        due = [r.id for r in tx.unsealed_records(now_ns=now(), limit=limit)]
    return sum(seal_one(store=store, cfg=cfg, record_id=rid or 0, now=now) == "sealed" for rid in due)


# --- the case's agreement (collector/cases/hr.py) -----------------------------------------------------------

def _china_iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**9, CHINA).isoformat()


def record_for_case(tx: AgreementArea, record_id: int) -> dict[str, Any]:
    """A signed record as HR's agreement on a case takes it; 422 if it cannot back a deduction."""
    record = tx.get_signed_record(record_id)
    if record is None:
        raise AgreementError(422, f"no signed agreement {record_id} on record")
    version = tx.get_agreement_version(record.version_id)
    template = tx.get_agreement_template(version.template_id) if version else None
    if version is None or template is None:  # pragma: no cover - the foreign keys forbid it
        raise AgreementError(422, f"the version of record {record_id} is gone")
    if not backs_deduction(record, template.kind):
        why = ("it is not a confidentiality agreement" if template.kind != TemplateKind.CONFIDENTIALITY.value else
               "its acknowledgement is not yet timestamped" if record.valid else
               f"its signature does not validate ({record.validation.get('reason', '')})")
        raise AgreementError(422, f"record {record_id} cannot back a deduction: {why}")
    return {"agreement_record_id": record.id, "title": template.title, "version": version.version,
            "document_sha256": record.document_sha256, "text_sha256": version.sha256,
            "signed_by": record.employee_id, "signed_at": _china_iso(record.signed_at_ns),
            "identity_check": record.identity_check, "platform": record.platform,
            "evidence_ref": record.evidence_ref, "source": record.source}


def offers_for_case(tx: AgreementArea, *, subject_user: str, employee_ids: Sequence[str],
                    incident_first_ns: int) -> list[dict[str, Any]]:
    """The signed agreements HR may pick for a case: the employee's, valid, signed before the incident's day."""
    people = {e.employee_id for e in tx.agreement_employees_for_user(subject_user)} if subject_user else set()
    people |= {e for e in employee_ids if tx.get_agreement_employee(e) is not None}
    incident_day = datetime.fromtimestamp(incident_first_ns / 1e9, CHINA).date()
    out = []
    for emp in sorted(people):
        for record in tx.signed_records(emp):
            if record.signed_at_ns >= incident_first_ns or (
                    datetime.fromtimestamp(record.signed_at_ns / 1e9, CHINA).date() >= incident_day):
                continue
            try:
                out.append(record_for_case(tx, record.id or 0))
            except AgreementError:
                continue
    return out
