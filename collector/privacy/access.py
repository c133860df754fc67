"""The access request of PIPL §45: everything the collector holds about one person, for that person.

``find_person`` resolves what HR typed (a pseudonym, a user name as events carry it, or a payroll id of
the agreements registry) to a person; ``export_person`` reads, in the caller's transaction, the
pseudonym mapping, the events attributed to them, their alerts, the cases about them (history,
comments, attachment records, HR's records, hand-offs), their agreements on record (when
collector/agreements is there) and the audit entries about them, and audits the request like a
reveal: who asked, for which pseudonym and why, never the name itself. The export is for the person,
so it shows their real user name next to the pseudonym.

``write_export`` writes it as JSON, or as a zip holding ``person.json`` and a short README.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

from collector.alerts.models import AlertQuery
from collector.audit.models import AuditEntry
from collector.events.models import EventFilter
from collector.privacy.codes import parse
from collector.privacy.service import REASON_MAX, REASON_MIN, PrivacyError, pseudonym_of
from collector.storage.base import AlertArea, AuditArea, CaseArea, EventArea, PrivacyArea

__all__ = ["Person", "find_person", "export_person", "export_bytes", "write_export", "FORMAT"]

FORMAT = "shoumi.access-request.v1"
_PAGE = 1000


class _AccessTx(PrivacyArea, EventArea, AlertArea, CaseArea, AuditArea, Protocol):
    """What an access request reads (and the audit row it writes)."""


@dataclass(frozen=True)
class Person:
    """Whom an access request is about."""

    user_name: str
    pseudonym: str
    employee_ids: tuple[str, ...] = ()


def _agreements(tx: Any) -> Any:
    """The agreements area when this build has it (collector/agreements), else None."""
    if importlib.util.find_spec("collector.agreements") is None:
        return None
    return tx if hasattr(tx, "agreement_employees_for_user") else None


def _has_records(tx: _AccessTx, name: str) -> bool:
    if tx.list_events(EventFilter(user=name), cursor=None, limit=1).items:
        return True
    if tx.alert_ids_matching(AlertQuery(user=name), limit=1):
        return True
    return any(c.subject_user == name for c in _cases(tx))


def find_person(*, tx: _AccessTx, who: str) -> Person:
    """Resolves a pseudonym, user name or payroll id to a person; PrivacyError 404 when nothing is held about them."""
    text = who.strip()
    if not text or len(text) > 256:
        raise PrivacyError(422, "name the employee: a pseudonym (P-...), a user name or a payroll id")
    name: str | None = None
    code = parse(text) if text.upper().startswith(("P-", "员工")) else None
    if code is not None:
        name = tx.user_for_pseudonym(code)
        if name is None:
            raise PrivacyError(404, f"no person has the pseudonym {code}")
    area = _agreements(tx)
    if name is None and area is not None:
        employee = area.get_agreement_employee(text)
        if employee is not None and employee.user_name:
            name = employee.user_name
    if name is None:
        if not (tx.pseudonyms_for([text]) or _has_records(tx, text)):
            raise PrivacyError(404, f"the collector holds nothing about {text[:60]!r} (no pseudonym, event, "
                                    "alert or case)")
        name = text
    ids: tuple[str, ...] = ()
    if area is not None:
        ids = tuple(sorted(e.employee_id for e in area.agreement_employees_for_user(name)))
    return Person(name, pseudonym_of(tx=tx, user_name=name), ids)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):  # dicts, and events' attributes (a mapping parsed from their text)
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "value") and hasattr(value, "name"):  # an enum
        return value.value
    return value


def _cases(tx: CaseArea) -> Iterator[Any]:
    cursor: int | None = None
    while True:
        page = tx.list_cases(cursor=cursor, limit=_PAGE)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = int(page.next_cursor)


def _events(tx: EventArea, name: str) -> list[Any]:
    out: list[Any] = []
    cursor: int | None = None
    while True:
        page = tx.list_events(EventFilter(user=name), cursor=cursor, limit=_PAGE)
        out.extend(_plain(e) for e in page.items)
        if page.next_cursor is None:
            return out
        cursor = int(page.next_cursor)


def _audit_about(tx: AuditArea, *, person: Person, alert_ids: set[str], case_ids: set[str]) -> list[Any]:
    """Audit entries about the person: on their alerts, cases or pseudonym, or naming them as target or user."""
    out, cursor = [], None
    names = {person.user_name, person.pseudonym, *person.employee_ids}
    while True:
        page = tx.list_audit(cursor=cursor, limit=_PAGE, oldest_first=True)
        for e in page.items:
            kind = e.action.split(".", 1)[0]
            details = e.details if isinstance(e.details, dict) else {}
            if (e.target in names or details.get("user") in names or details.get("employee_id") in names
                    or (kind == "alert" and e.target in alert_ids) or (kind == "case" and e.target in case_ids)):
                out.append(_plain(e))
        if page.next_cursor is None:
            return out
        cursor = int(page.next_cursor)


def export_person(*, tx: _AccessTx, who: str, reason: str, actor: str, now_ns: int) -> dict[str, Any]:
    """Everything held about one person (see the module), with the request audited in the same transaction."""
    why = " ".join(reason.split())
    if not REASON_MIN <= len(why) <= REASON_MAX:
        raise PrivacyError(422, f"an access request needs a reason of {REASON_MIN} to {REASON_MAX} characters "
                                "(for example: the employee's written request of 2026-12-01)")
    person = find_person(tx=tx, who=who)
    name = person.user_name
    alert_ids = list(tx.alert_ids_matching(AlertQuery(user=name), limit=10**9))
    alerts = [_plain(a) for a in tx.get_alerts(alert_ids)]
    cases = []
    for c in _cases(tx):
        if c.subject_user != name:
            continue
        cid = c.id or 0
        cases.append({**_plain(c), "history": _plain(tx.case_history(cid)), "comments": _plain(tx.list_comments(cid)),
                      "attachments": _plain(tx.list_attachments(cid)), "hr_records": _plain(tx.hr_records(cid)),
                      "handoffs": _plain(tx.handoffs(cid))})
    agreements: list[Any] | None = None
    area = _agreements(tx)
    if area is not None:
        agreements = []
        for e in area.agreement_employees_for_user(name):
            agreements.append({"employee": _plain(e), "records": _plain(area.signed_records(e.employee_id))})
    audit = _audit_about(tx, person=person, alert_ids={str(i) for i in alert_ids},
                         case_ids={str(c["id"]) for c in cases})
    counts = {"events": 0, "alerts": len(alerts), "cases": len(cases), "audit": len(audit),
              "agreements": sum(len(a["records"]) for a in agreements or [])}
    events = _events(tx, name)
    counts["events"] = len(events)
    tx.append_audit(AuditEntry(now_ns, actor, "privacy.access_request", person.pseudonym,
                               {"reason": why, "counts": counts}))
    return {
        "format": FORMAT, "generated_at_ns": now_ns, "requested_by": actor, "reason": why,
        "person": {"user_name": name, "pseudonym": person.pseudonym, "employee_ids": list(person.employee_ids)},
        "counts": counts, "events": events, "alerts": alerts, "cases": cases,
        "agreements": agreements, "audit": audit,
        "note": "Everything the Shoumi collector holds about this person (PIPL §45). Every case decision was "
                "taken by a person, not by the software (PIPL §24). Attachment contents are listed by SHA-256; "
                "HR hands them over on request.",
    }


_README = """Access request export (PIPL §45)

person.json holds everything the Shoumi collector stores about one person: the pseudonym they are
shown by and their user name, the events attributed to them, their alerts, the cases about them,
their agreements on record and the audit entries about them. Times are nanoseconds since
1970-01-01 UTC. A person, not the software, decided every case (PIPL §24).
"""


def export_bytes(data: dict[str, Any], *, as_zip: bool) -> bytes:
    """The export as JSON bytes, or as a zip of person.json and README.txt."""
    body = json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
    if not as_zip:
        return body
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("person.json", body)
        z.writestr("README.txt", _README)
    return buf.getvalue()


def write_export(data: dict[str, Any], out: Path) -> None:
    """Writes the export to ``out`` (a zip unless it ends in .json), 0600, via a temporary file."""
    blob = export_bytes(data, as_zip=out.suffix.lower() != ".json")
    tmp = out.with_name(f".{out.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(blob)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
