"""SQL for agreements on record: templates, versions, employees and signed records (collector/agreements)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from collector.agreements.models import Employee, SignedRecord, Template, Version
from collector.storage.base import AlreadyExists
from collector.storage.sql.schema import (agreement_employees, agreement_records, agreement_templates,
                                          agreement_versions)

__all__ = ["AgreementsSql"]

_RECORD_COLUMNS = [c for c in agreement_records.c if c.name != "document"]


class AgreementsSql:
    """The agreements area."""

    _conn: Connection

    def add_agreement_template(self, template: Template) -> Template:
        """Stores a template; returns it with its id."""
        new_id = int(self._conn.execute(agreement_templates.insert().values(
            title=template.title, kind=template.kind, created_by=template.created_by,
            created_at_ns=template.created_at_ns).returning(agreement_templates.c.id)).scalar_one())
        return replace(template, id=new_id)

    def list_agreement_templates(self) -> Sequence[Template]:
        """Every template, oldest first."""
        rows = self._conn.execute(sa.select(agreement_templates).order_by(agreement_templates.c.id))
        return [Template(r.title, r.kind, r.created_by, r.created_at_ns, id=r.id) for r in rows]

    def get_agreement_template(self, template_id: int) -> Template | None:
        """A template by id."""
        r = self._conn.execute(sa.select(agreement_templates).where(agreement_templates.c.id == template_id)).first()
        return None if r is None else Template(r.title, r.kind, r.created_by, r.created_at_ns, id=r.id)

    def add_agreement_version(self, version: Version) -> Version:
        """Stores a version; AlreadyExists if the template has one of that name."""
        try:
            with self._conn.begin_nested():
                new_id = int(self._conn.execute(agreement_versions.insert().values(
                    template_id=version.template_id, version=version.version, text=version.text,
                    sha256=version.sha256, effective_from=version.effective_from, created_by=version.created_by,
                    created_at_ns=version.created_at_ns).returning(agreement_versions.c.id)).scalar_one())
        except IntegrityError as exc:
            raise AlreadyExists(f"template {version.template_id} already has a version {version.version!r}") from exc
        return replace(version, id=new_id)

    def list_agreement_versions(self, template_id: int) -> Sequence[Version]:
        """A template's versions, oldest first."""
        rows = self._conn.execute(sa.select(agreement_versions).where(agreement_versions.c.template_id == template_id)
                                  .order_by(agreement_versions.c.id))
        return [_version(r) for r in rows]

    def get_agreement_version(self, version_id: int) -> Version | None:
        """A version by id."""
        r = self._conn.execute(sa.select(agreement_versions).where(agreement_versions.c.id == version_id)).first()
        return None if r is None else _version(r)

    def put_agreement_employee(self, employee: Employee) -> None:
        """Adds an employee or updates their user name and account; AlreadyExists if the account is another's."""
        values = dict(user_name=employee.user_name, account=employee.account)
        try:
            with self._conn.begin_nested():
                done = self._conn.execute(agreement_employees.update().where(
                    agreement_employees.c.employee_id == employee.employee_id).values(**values)).rowcount
                if not done:
                    self._conn.execute(agreement_employees.insert().values(
                        employee_id=employee.employee_id, created_by=employee.created_by,
                        created_at_ns=employee.created_at_ns, **values))
        except IntegrityError as exc:
            raise AlreadyExists(f"the account {employee.account!r} belongs to another employee") from exc

    def get_agreement_employee(self, employee_id: str) -> Employee | None:
        """An employee by payroll id."""
        r = self._conn.execute(sa.select(agreement_employees).where(
            agreement_employees.c.employee_id == employee_id)).first()
        return None if r is None else _employee(r)

    def agreement_employee_for_account(self, account: str) -> Employee | None:
        """The employee a collector account is linked to."""
        r = self._conn.execute(sa.select(agreement_employees).where(agreement_employees.c.account == account)).first()
        return None if r is None else _employee(r)

    def agreement_employees_for_user(self, user_name: str) -> Sequence[Employee]:
        """The employees whose events carry this user name."""
        rows = self._conn.execute(sa.select(agreement_employees).where(agreement_employees.c.user_name == user_name)
                                  .order_by(agreement_employees.c.employee_id))
        return [_employee(r) for r in rows]

    def list_agreement_employees(self) -> Sequence[Employee]:
        """Every employee, by payroll id."""
        rows = self._conn.execute(sa.select(agreement_employees).order_by(agreement_employees.c.employee_id))
        return [_employee(r) for r in rows]

    def add_signed_record(self, record: SignedRecord, document: bytes) -> SignedRecord:
        """Stores a signed record with the exact bytes it is about; returns it with its id."""
        new_id = int(self._conn.execute(agreement_records.insert().values(
            document=bytes(document), **_record_row(record)).returning(agreement_records.c.id)).scalar_one())
        return replace(record, id=new_id)

    def get_signed_record(self, record_id: int) -> SignedRecord | None:
        """A signed record by id (without its document)."""
        r = self._conn.execute(sa.select(*_RECORD_COLUMNS).where(agreement_records.c.id == record_id)).first()
        return None if r is None else _record(r)

    def signed_records(self, employee_id: str) -> Sequence[SignedRecord]:
        """An employee's signed records, oldest first."""
        rows = self._conn.execute(sa.select(*_RECORD_COLUMNS).where(agreement_records.c.employee_id == employee_id)
                                  .order_by(agreement_records.c.id))
        return [_record(r) for r in rows]

    def signed_document(self, record_id: int) -> bytes | None:
        """The exact bytes a record is about: the PDF, or the acknowledgement's canonical JSON."""
        found = self._conn.execute(sa.select(agreement_records.c.document).where(
            agreement_records.c.id == record_id)).scalar()
        return None if found is None else bytes(found)

    def save_seal(self, *, record_id: int, tsr: bytes | None, sealed_at_ns: int | None, attempts: int, error: str,
                  next_seal_ns: int) -> bool:
        """Records a timestamping attempt on an acknowledgement not sealed yet; False if it is sealed already."""
        done = self._conn.execute(agreement_records.update().where(
            agreement_records.c.id == record_id, agreement_records.c.tsr.is_(None)).values(
            tsr=tsr, sealed_at_ns=sealed_at_ns, seal_attempts=attempts, seal_error=error,
            next_seal_ns=next_seal_ns)).rowcount
        return bool(done == 1)

    def unsealed_records(self, *, now_ns: int, limit: int) -> Sequence[SignedRecord]:
        """Acknowledgements not yet timestamped whose next attempt is due, oldest first."""
        q = (sa.select(*_RECORD_COLUMNS).where(agreement_records.c.source == "acknowledgement",
                                               agreement_records.c.tsr.is_(None),
                                               agreement_records.c.next_seal_ns <= now_ns)
             .order_by(agreement_records.c.id).limit(limit))
        # two collectors may both ask the TSA for one record; save_seal keeps the first token only
        return [_record(r) for r in self._conn.execute(q)]


def _version(r: Row[Any]) -> Version:
    return Version(r.template_id, r.version, r.text, r.sha256, r.effective_from, r.created_by, r.created_at_ns, id=r.id)


def _employee(r: Row[Any]) -> Employee:
    return Employee(r.employee_id, r.user_name, r.account, r.created_by, r.created_at_ns)


def _record_row(rec: SignedRecord) -> dict[str, Any]:
    return dict(employee_id=rec.employee_id, version_id=rec.version_id, source=rec.source, platform=rec.platform,
                evidence_ref=rec.evidence_ref, signed_at_ns=rec.signed_at_ns, identity_check=rec.identity_check,
                document_sha256=rec.document_sha256, recorded_by=rec.recorded_by, recorded_at_ns=rec.recorded_at_ns,
                valid=rec.valid, validation=json.dumps(dict(rec.validation), sort_keys=True, ensure_ascii=False),
                session_hash=rec.session_hash, tsr=rec.tsr, sealed_at_ns=rec.sealed_at_ns,
                seal_attempts=rec.seal_attempts, seal_error=rec.seal_error, next_seal_ns=rec.next_seal_ns)


def _record(r: Row[Any]) -> SignedRecord:
    return SignedRecord(r.employee_id, r.version_id, r.source, r.platform, r.evidence_ref, r.signed_at_ns,
                        r.identity_check, r.document_sha256, r.recorded_by, r.recorded_at_ns, bool(r.valid),
                        json.loads(r.validation), r.session_hash, None if r.tsr is None else bytes(r.tsr),
                        r.sealed_at_ns, r.seal_attempts, r.seal_error, r.next_seal_ns, id=r.id)
