"""Exports of frozen deduction lines: a neutral CSV and Frappe HRMS "Additional Salary" records.

Both render an ``ExportBatch`` the ledger has already frozen; neither decides an amount.
"""

from payroll_bridge.exports.frappe import FrappeClient, PushResult, additional_salary_records
from payroll_bridge.exports.neutral_csv import CSV_COLUMNS, render_csv

__all__ = ["CSV_COLUMNS", "FrappeClient", "PushResult", "additional_salary_records", "render_csv"]
