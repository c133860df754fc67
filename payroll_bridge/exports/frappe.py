"""Frappe HRMS "Additional Salary" records: as a file, and pushed over Frappe's REST API with retries.

One non-recurring record per deduction line (so one per case per month), and one per case for the
refunds an export pays (under the refund component, an earning), dated the first day of the period, referring to the case through ``ref_doctype``/``ref_docname``, with
``overwrite_salary_structure_amount`` off so that two cases in one month add up instead of
colliding. Amounts are yuan as decimal strings ("1600.00"): Frappe casts them; a float never
carries money here.

The push is idempotent: before each POST it asks Frappe whether a record for the same employee,
case, component and date already exists (a retry after a lost response must not create a second
one). Transport errors, 429 and 5xx are retried with exponential back-off; any other refusal is
reported for that record and the others go on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from payroll_bridge.errors import PushError
from payroll_bridge.ledger import ExportBatch
from payroll_bridge.settings import FrappeSettings

__all__ = ["additional_salary_records", "FrappeClient", "PushResult", "DOCTYPE"]

DOCTYPE = "Additional Salary"


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def additional_salary_records(batch: ExportBatch, settings: FrappeSettings) -> list[dict[str, Any]]:
    """The batch as Frappe documents, each tagged with the line's idempotency key (not sent)."""
    records = []
    for line in batch.lines:
        doc: dict[str, Any] = {
            "doctype": DOCTYPE,
            "employee": line.employee_id,
            "salary_component": settings.salary_component,
            "amount": _yuan(line.amount_fen),
            "payroll_date": line.period.first_day.isoformat(),
            "company": settings.company,
            "is_recurring": 0,
            "overwrite_salary_structure_amount": 0,
            "ref_doctype": settings.ref_doctype,
            "ref_docname": line.case_id,
        }
        if settings.submit:
            doc["docstatus"] = 1
        records.append({"idempotency_key": line.idempotency_key, "doc": doc})
    for refund in batch.refunds:
        # A refund is an earning ("Confidentiality Loss Refund") in the month it is paid: one per case.
        doc = {
            "doctype": DOCTYPE,
            "employee": refund.employee_id,
            "salary_component": settings.refund_component,
            "amount": _yuan(refund.amount_fen),
            "payroll_date": refund.period.first_day.isoformat(),
            "company": settings.company,
            "is_recurring": 0,
            "overwrite_salary_structure_amount": 0,
            "ref_doctype": settings.ref_doctype,
            "ref_docname": refund.case_id,
        }
        if settings.submit:
            doc["docstatus"] = 1
        records.append({"idempotency_key": refund.idempotency_key, "doc": doc})
    return records


@dataclass(frozen=True)
class PushResult:
    """What Frappe took (key -> its record name) and what it refused (key -> reason)."""

    accepted: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    attempts: int = 0


class _Retryable(Exception):
    pass


class FrappeClient:
    """Talks to one Frappe site; ``transport`` lets a caller supply its own httpx transport."""

    def __init__(self, settings: FrappeSettings, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not settings.url or not settings.api_key or settings.api_secret is None:
            raise PushError("Frappe push needs SHOUMI_PAYROLL_FRAPPE__URL, __API_KEY and __API_SECRET")
        self._settings = settings
        self._sleep = sleep
        self._attempts = 0
        self._http = httpx.Client(
            base_url=settings.url.rstrip("/"),
            headers={"Authorization": f"token {settings.api_key}:{settings.api_secret.get_secret_value()}",
                     "Accept": "application/json"},
            timeout=settings.timeout_seconds,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FrappeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; transport errors, 429 and 5xx become _Retryable."""
        self._attempts += 1
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise _Retryable(f"{method} {url}: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"{method} {url}: HTTP {response.status_code}")
        return response

    def _existing(self, doc: dict[str, Any]) -> str | None:
        filters = [
            [DOCTYPE, "employee", "=", doc["employee"]],
            [DOCTYPE, "ref_docname", "=", doc["ref_docname"]],
            [DOCTYPE, "salary_component", "=", doc["salary_component"]],
            [DOCTYPE, "payroll_date", "=", doc["payroll_date"]],
            [DOCTYPE, "docstatus", "!=", 2],
        ]
        response = self._call("GET", f"/api/resource/{DOCTYPE}",
                              params={"filters": json.dumps(filters), "fields": json.dumps(["name"])})
        if response.status_code != 200:
            raise PushError(f"Frappe refused the look-up: HTTP {response.status_code} {_reason(response)}")
        found = response.json().get("data") or []
        return str(found[0]["name"]) if found else None

    def _create_once(self, doc: dict[str, Any]) -> str:
        """Look-up then POST; every retry starts again with the look-up, so a lost answer is not doubled."""
        delay = self._settings.backoff_seconds
        for attempt in range(self._settings.retries + 1):
            try:
                name = self._existing(doc)
                if name is not None:
                    return name
                response = self._call("POST", f"/api/resource/{DOCTYPE}", json=doc)
                if response.status_code not in (200, 201):
                    raise PushError(f"HTTP {response.status_code} {_reason(response)}")
                return str(response.json()["data"]["name"])
            except _Retryable as exc:
                if attempt == self._settings.retries:
                    raise PushError(f"failed after {attempt + 1} attempts: {exc}") from exc
                self._sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def push(self, records: list[dict[str, Any]], *, skip: set[str] | None = None) -> PushResult:
        """Creates each record unless Frappe already has it; never raises for a single refusal."""
        accepted: dict[str, str] = {}
        failed: dict[str, str] = {}
        for record in records:
            key, doc = record["idempotency_key"], record["doc"]
            if skip and key in skip:
                continue
            try:
                accepted[key] = self._create_once(doc)
            except PushError as exc:
                failed[key] = str(exc)
            except (ValueError, KeyError) as exc:
                failed[key] = f"unexpected answer from Frappe: {exc}"
        return PushResult(accepted, failed, self._attempts)


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("exception") or body.get("message") or body.get("_server_messages") or body)[:300]
