"""Detection's values: the built-in rules' settings (what security edits in the rules file), findings.

Each rule's settings are a frozen pydantic model that refuses unknown keys and impossible values, so a
typo or a negative threshold is an error at load (collector/detection/config.py names its line).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "RuleSettings", "ReadBurst", "BulkRead", "UsbExfiltration", "SensitiveCopyOut", "AfterHours",
    "WorkingHours", "FirstAccess", "RuleSet", "RULE_NAMES", "DEFAULT_SYNC_FOLDERS",
]

# Where sync clients keep what they upload: content copied there leaves the company.
DEFAULT_SYNC_FOLDERS: tuple[str, ...] = (
    "*/Nutstore/*", "*/我的坚果云/*", "*/BaiduNetdisk/*", "*/BaiduNetdiskDownload/*", "*/百度网盘/*",
    "*/OneDrive/*", "*/OneDrive - */*", "*/Dropbox/*", "*/Google Drive/*", "*/iCloud Drive/*", "*/WPS Cloud Files/*",
)


class RuleSettings(BaseModel):
    """What every rule has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    severity: str = Field("high", pattern="^(low|medium|high|critical)$")
    group_minutes: float = Field(30.0, gt=0, le=7 * 24 * 60, description="new evidence within this joins the open alert")


class ReadBurst(RuleSettings):
    """More than ``threshold`` reads of sensitive files by one user within ``window_minutes``."""

    threshold: int = Field(20, ge=1)
    window_minutes: float = Field(5.0, gt=0, le=24 * 60)


class BulkRead(RuleSettings):
    """An hour with more reads than both ``floor_per_hour`` and the user's own baseline."""

    floor_per_hour: int = Field(100, ge=1)
    baseline_days: int = Field(30, ge=1, le=365)
    sigmas: float = Field(3.0, gt=0)
    # a user seen for fewer hours than this is judged by the floor times ``cold_start_factor`` alone
    cold_start_hours: int = Field(40, ge=0)
    cold_start_factor: float = Field(2.0, ge=1)


class UsbExfiltration(RuleSettings):
    """Sensitive content (a usb.write with a match) written to removable media; to a company-issued
    device (the policy's ``company_devices``) at ``company_device_severity``."""

    group_minutes: float = Field(10.0, gt=0, le=7 * 24 * 60)
    company_device_severity: str = Field("low", pattern="^(low|medium|high|critical)$")


class SensitiveCopyOut(RuleSettings):
    """Sensitive content copied, moved or archived out of the sensitive folders, sync folders included."""

    sync_folders: tuple[str, ...] = DEFAULT_SYNC_FOLDERS
    severity: str = Field("high", pattern="^(low|medium|high|critical)$")


class WorkingHours(BaseModel):
    """When someone works: a day's start and end, local time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field("08:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field("19:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    @model_validator(mode="after")
    def _ordered(self) -> "WorkingHours":
        if self.end <= self.start:
            raise ValueError(f"end {self.end} is not after start {self.start}")
        return self


class AfterHours(RuleSettings):
    """Access outside the user's working calendar (Chinese holidays and make-up working days known)."""

    severity: str = Field("medium", pattern="^(low|medium|high|critical)$")
    timezone: str = "Asia/Shanghai"
    hours: WorkingHours = WorkingHours()
    users: dict[str, WorkingHours] = Field(default_factory=dict, description="per user, by user name")
    departments: dict[str, WorkingHours] = Field(default_factory=dict)
    user_departments: dict[str, str] = Field(default_factory=dict, description="user name -> department")
    holiday_file: str | None = Field(None, description="a customer's own holiday/work-day file (JSON)")
    min_events: int = Field(5, ge=1, description="off-hours events within group_minutes before it is an alert")


class FirstAccess(RuleSettings):
    """A user reading a sensitive folder they have never touched before, after a learning period."""

    severity: str = Field("medium", pattern="^(low|medium|high|critical)$")
    learning_days: float = Field(14.0, ge=0)
    folder_depth: int = Field(3, ge=1, le=16, description="how many path components name a folder")
    max_folders_per_user: int = Field(2000, ge=10, le=100_000, description="state bound per user")


class RuleSet(BaseModel):
    """Every built-in rule's settings; what the rules file sets, over the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    read_burst: ReadBurst = ReadBurst()
    bulk_read: BulkRead = BulkRead()
    usb_exfiltration: UsbExfiltration = UsbExfiltration()
    sensitive_copy_out: SensitiveCopyOut = SensitiveCopyOut()
    after_hours: AfterHours = AfterHours()
    first_access: FirstAccess = FirstAccess()


RULE_NAMES: tuple[str, ...] = tuple(RuleSet.model_fields)
