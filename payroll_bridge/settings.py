"""The bridge's settings: one typed object, built once in __main__ and passed down.

Every field can come from the environment (prefix SHOUMI_PAYROLL_, nested groups with "__",
e.g. SHOUMI_PAYROLL_FRAPPE__URL=https://hr.example.com) or from the command line. Tests build it
directly.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PayrollSettings", "FrappeSettings", "ExportSettings"]


class FrappeSettings(BaseModel):
    """Where and how to push "Additional Salary" records to Frappe HRMS."""

    url: str | None = Field(default=None, description="base URL of the Frappe site, e.g. https://hr.example.com")
    api_key: str | None = None
    api_secret: SecretStr | None = None
    company: str = Field(default="", description="the Company the records belong to")
    salary_component: str = Field(default="Confidentiality Loss Recovery", description="a deduction component")
    refund_component: str = Field(default="Confidentiality Loss Refund",
                                  description="an earning component: refunds of over-deductions")
    ref_doctype: str = Field(default="Shoumi Case", description="DocType the records refer to for the case")
    submit: bool = Field(default=False, description="submit the records (docstatus 1) instead of leaving drafts")
    retries: int = Field(default=3, ge=0, le=10, description="retries after the first attempt")
    backoff_seconds: float = Field(default=0.5, ge=0)
    timeout_seconds: float = Field(default=10.0, gt=0)


class ExportSettings(BaseModel):
    """The neutral export's fixed values."""

    component_code: str = "SHOUMI_LOSS"
    refund_component_code: str = "SHOUMI_LOSS_REFUND"
    legal_basis: str = "《工资支付暂行规定》第十六条；《劳动合同法》第九十条"


class PayrollSettings(BaseSettings):
    """Everything the bridge needs to know."""

    model_config = SettingsConfigDict(env_prefix="SHOUMI_PAYROLL_", env_nested_delimiter="__")

    state_dir: Path | None = Field(
        None, description="where the ledger lives (default $XDG_STATE_HOME/shoumi-payroll, else "
        "~/.local/state/shoumi-payroll); created 0700")
    ledger_path: Path | None = Field(None, description="the ledger file (default STATE_DIR/ledger.sqlite3); 0600")
    minimum_wage_table: Path | None = Field(
        None, description="a customer's table (same format as the bundled one) laid over the bundled rows"
    )
    stale_after_months: int = Field(default=18, ge=1)
    intake_token: SecretStr | None = Field(
        default=None, description="no longer used: each HTTP client has its own credential (`client create`)")
    http_listen: str = "127.0.0.1:8090"
    employer_name: str = Field(default="公司", description="the employer's name on the notice")
    appeal_days: int = Field(default=15, ge=1, description="days the employee has to object to the notice")
    frappe: FrappeSettings = Field(default_factory=FrappeSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)

    def resolved_state_dir(self) -> Path:
        """The configured state directory, or the user's XDG state directory."""
        if self.state_dir is not None:
            return self.state_dir
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "shoumi-payroll"

    def resolved_ledger_path(self) -> Path:
        """The ledger file: LEDGER_PATH, or ledger.sqlite3 in the state directory."""
        return self.ledger_path if self.ledger_path is not None else self.resolved_state_dir() / "ledger.sqlite3"
