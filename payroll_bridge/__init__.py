"""Shoumi's payroll bridge: turns HR-confirmed cases into wage deductions that never break the law.

The pure core (``rules``: the deduction rule; ``intake``'s checks; ``lifecycle``: the state tables)
takes values and returns values. Adapters sit at the edge: ``contract`` (the schedule JSON),
``minimum_wage`` (the table file), ``ledger`` (SQLite; its records in ``ledger_records``), ``exports`` (CSV, Frappe HRMS over HTTP),
``notice`` (text and PDF), ``api`` (FastAPI) and ``__main__`` (the CLI). Nothing here imports the
collector or the agent.
"""

from payroll_bridge.errors import InvalidInput, LedgerError, PayrollError, PushError, TableError
from payroll_bridge.period import Period
from payroll_bridge.rules import Binding, Case, DeductionLine, PeriodTerms, PeriodWage, schedule

__all__ = [
    "Binding",
    "Case",
    "DeductionLine",
    "InvalidInput",
    "LedgerError",
    "PayrollError",
    "Period",
    "PeriodTerms",
    "PeriodWage",
    "PushError",
    "TableError",
    "schedule",
]
