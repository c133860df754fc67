"""Reading the audit log: filtered pages for auditors, and the export (itself an audited action).

The log is written by every feature's own service (``tx.append_audit``), never here; nothing here
changes or removes a row.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any, Iterator

from collector.audit.models import AuditEntry, AuditFilter
from collector.domain.records import Page
from collector.storage.base import AuditArea, Store
from collector.web.timefmt import format_ns

__all__ = ["list_entries", "record_export", "export_lines", "entry_json", "EXPORT_FORMATS", "CSV_COLUMNS"]

EXPORT_FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("id", "at", "at_ns", "actor", "action", "target", "details", "prev_hash", "row_hash")
_EXPORT_PAGE = 1000


def entry_json(e: AuditEntry) -> dict[str, Any]:
    """One entry as the API and the export show it."""
    return {"id": e.id, "at": format_ns(e.at_ns), "at_ns": e.at_ns, "actor": e.actor, "action": e.action,
            "target": e.target, "details": dict(e.details), "prev_hash": e.prev_hash, "row_hash": e.row_hash}


def list_entries(*, tx: AuditArea, flt: AuditFilter, cursor: int | None, limit: int) -> Page:
    """Lists entries matching the filter, newest first."""
    return tx.list_audit(cursor=cursor, limit=limit, filter=flt)


def record_export(*, tx: AuditArea, flt: AuditFilter, fmt: str, actor: str) -> None:
    """Records that someone exported the log, with what they asked for."""
    asked = {k: v for k, v in vars(flt).items() if v is not None}
    tx.append_audit(AuditEntry(time.time_ns(), actor, "audit.export", "audit_log", {"format": fmt, "filter": asked}))


def export_lines(*, store: Store, flt: AuditFilter, fmt: str) -> Iterator[str]:
    """The matching entries oldest first, as JSON lines or CSV, a page per short read transaction."""
    if fmt == "csv":
        yield _csv_line(CSV_COLUMNS)
    cursor: int | None = None
    while True:
        with store.read() as tx:
            page = tx.list_audit(cursor=cursor, limit=_EXPORT_PAGE, filter=flt, oldest_first=True)
        for e in page.items:
            row = entry_json(e)
            if fmt == "csv":
                row["details"] = json.dumps(row["details"], ensure_ascii=False, sort_keys=True)
                yield _csv_line(tuple(_csv_safe(row[c]) for c in CSV_COLUMNS))
            else:
                yield json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"
        if page.next_cursor is None:
            return
        cursor = int(page.next_cursor)


def _csv_safe(value: Any) -> str:
    # a cell starting with = + - @ is a formula to a spreadsheet: typed text must not become one
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_line(cells: tuple[Any, ...]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()
