"""The neutral CSV: one row per deduction, for any payroll system. UTF-8, RFC 4180 quoting.

A refund is a row of its own with a negative ``amount_fen`` (a negative deduction), the refund
component code, and in ``binding`` the limit the refunded deduction went over.
"""

from __future__ import annotations

import csv
import io

from payroll_bridge.ledger import ExportBatch
from payroll_bridge.settings import ExportSettings

__all__ = ["CSV_COLUMNS", "render_csv"]

CSV_COLUMNS = (
    "idempotency_key", "employee_id", "period", "component_code", "amount_fen", "case_id",
    "legal_basis", "binding", "notice_id", "notice_date", "export_id",
)


def render_csv(batch: ExportBatch, settings: ExportSettings) -> str:
    """The batch as CSV text, header first; amounts in integer fen."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in batch.lines:
        writer.writerow([
            line.idempotency_key, line.employee_id, str(line.period), settings.component_code, line.amount_fen,
            line.case_id, settings.legal_basis, line.binding.value, line.notice_id or "",
            line.notice_date.isoformat() if line.notice_date else "", batch.export_id or "",
        ])
    for refund in batch.refunds:
        writer.writerow([
            refund.idempotency_key, refund.employee_id, str(refund.period), settings.refund_component_code,
            -refund.amount_fen, refund.case_id, settings.legal_basis, "+".join(b.value for b in refund.limits),
            "", "", batch.export_id or "",
        ])
    return out.getvalue()
