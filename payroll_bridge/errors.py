"""The payroll bridge's one exception tree.

    PayrollError                 base: catch this to catch everything the bridge raises
     ├── InvalidInput            input that breaks the contract (CLI exit 2, HTTP 422)
     ├── TableError              a minimum-wage table that cannot be trusted (bad file, missing row)
     ├── LedgerError             the ledger refuses an operation
     │    ├── UnknownRecord      no such case, employee or export
     │    └── TransitionRefused  the lifecycle table does not allow this step (HTTP 409)
     └── PushError               the payroll system did not take an export (after retries)

Each error carries ``exit_code`` and ``http_status`` so the CLI and the API need no mapping of
their own.
"""

from __future__ import annotations

__all__ = [
    "PayrollError",
    "InvalidInput",
    "TableError",
    "LedgerError",
    "UnknownRecord",
    "TransitionRefused",
    "PushError",
]


class PayrollError(Exception):
    """Base of every error the bridge raises on purpose."""

    exit_code = 1
    http_status = 500


class InvalidInput(PayrollError, ValueError):
    """The input breaks the documented contract; the message says where and why."""

    exit_code = 2
    http_status = 422


class TableError(PayrollError):
    """The minimum-wage table is malformed or has no row for what was asked."""

    exit_code = 2
    http_status = 422


class LedgerError(PayrollError):
    """The ledger refuses an operation."""

    exit_code = 1
    http_status = 409


class UnknownRecord(LedgerError, KeyError):
    """No such case, employee or export in the ledger."""

    http_status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TransitionRefused(LedgerError):
    """The lifecycle table has no such step from the record's current state."""

    http_status = 409


class PushError(PayrollError):
    """The payroll system did not accept the export, even after the retries."""

    exit_code = 3
    http_status = 502
