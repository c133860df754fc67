"""The collector's settings: one typed object, built once in __main__ and passed down.

Every field can come from the environment (prefix SHOUMI_COLLECTOR_, nested groups with "__",
e.g. SHOUMI_COLLECTOR_DETECTION__READ_BURST_THRESHOLD=30) or from the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from collector.wecom.settings import WeComSettings

if TYPE_CHECKING:
    from collector.retention.models import RetentionPolicy

__all__ = ["CollectorSettings", "DetectionSettings", "NotifySettings", "CasesSettings", "RetentionSettings", "AgreementSettings",
           "SsoSettings", "OidcSettings", "LdapSettings", "WeComLoginSettings",
           "parse_listen"]


class DetectionSettings(BaseModel):
    """Thresholds of the detection rules."""

    read_burst_threshold: int = Field(20, ge=1, description="alert on more reads than this...")
    read_burst_window_minutes: float = Field(5.0, gt=0, description="...by one user within this many minutes")


class NotifySettings(BaseModel):
    """Notifications of new high-severity alerts and case changes (collector/notify): WeCom robots, email."""

    public_base_url: str = Field("http://127.0.0.1:8080", max_length=200,
                                 description="the collector's address as people open it; links are made from it")
    language: Literal["both", "zh", "en"] = Field("both", description="both: Chinese with the English in brackets")
    min_severity: Literal["low", "medium", "high", "critical"] = "high"
    case_changes: bool = Field(True, description="also notify every case state change")
    wecom_webhooks: list[SecretStr] = Field(
        default_factory=list, description="group robots' webhook URLs, key included (secret: never logged)")
    wecom_per_minute: int = Field(20, ge=1, le=20, description="a robot takes at most 20 messages a minute")
    smtp_host: str | None = Field(None, description="the mail server; unset: no email")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "shoumi@localhost"
    mail_to: list[str] = Field(default_factory=list)
    mail_per_minute: int = Field(10, ge=1, le=1000, description="beyond this, queued notifications go in one digest")
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    interval_seconds: float = Field(1.0, gt=0, description="how often the outbox is filled and delivered")

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("public_base_url starts with https:// (or http://)")
        return value.rstrip("/")

    @field_validator("wecom_webhooks")
    @classmethod
    def _webhooks(cls, value: list[SecretStr]) -> list[SecretStr]:
        for url in value:
            if not url.get_secret_value().startswith(("https://", "http://")):
                raise ValueError("a WeCom webhook is an https:// URL with its key")
        return value

    def enabled(self) -> bool:
        """Tells whether anything is to be notified."""
        return bool(self.wecom_webhooks) or (self.smtp_host is not None and bool(self.mail_to))

class CasesSettings(BaseModel):
    """Cases and their hand-off to the payroll bridge (collector/cases)."""

    max_attachment_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024,
                                      description="a file attached to a case may be this large; bigger: 413")
    payroll_url: str | None = Field(None, max_length=200, description="the payroll bridge's intake, e.g. "
                                    "http://127.0.0.1:8090; unset: confirmed cases wait in the outbox")
    payroll_token_file: Path | None = Field(
        None, description="a file (0600) holding the collector's own bridge credential, spc_... "
                          "(shoumi-payroll client create collector); read at start, never logged")
    payroll_poll_seconds: float = Field(1.0, gt=0, description="how often the outbox is looked at")
    payroll_backoff_seconds: float = Field(2.0, gt=0, description="the first wait after a failed delivery; doubles")
    payroll_backoff_max_seconds: float = Field(300.0, gt=0, description="the longest wait between attempts")
    payroll_schedule_refresh_seconds: float = Field(600.0, gt=0, description="how often a filed case's schedule is read")
    payroll_timeout_seconds: float = Field(10.0, gt=0, le=120)

    @field_validator("payroll_url")
    @classmethod
    def _payroll_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("payroll_url starts with https:// (or http:// on loopback)")
        return value.rstrip("/") if value else value


class RetentionSettings(BaseModel):
    """How long each kind of record is kept (collector/retention; docs/privacy.md); events: ``retention_days``.

    A period unset (null) keeps that kind. Records handed to payroll are kept at least two years
    (《工资支付暂行规定》第六条); a ``payroll_days`` or ``audit_days`` below 730 is refused at start.
    """

    alerts_days: float | None = Field(730.0, gt=0, description="alerts no case holds, after their last update")
    cases_days: float | None = Field(1095.0, gt=0, description="closed or dismissed cases, after their last update")
    audit_days: float | None = Field(1095.0, gt=0, description="audit log rows (a prefix of the chain, anchored)")
    notifications_days: float | None = Field(90.0, gt=0, description="delivered or failed notifications")
    payroll_days: float = Field(730.0, gt=0, description="a case handed to payroll is kept this long after it")

    @field_validator("alerts_days", "cases_days", "audit_days", "notifications_days", mode="before")
    @classmethod
    def _kept(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("null", "none", "") else value

    @field_validator("payroll_days", "audit_days")
    @classmethod
    def _statutory_minimum(cls, value: float | None, info: Any) -> float | None:
        from collector.retention.models import PAYROLL_BASIS, PAYROLL_MIN_DAYS
        if value is not None and value < PAYROLL_MIN_DAYS:
            raise ValueError(f"retention {info.field_name} = {value:g} is below the statutory minimum of "
                             f"{PAYROLL_MIN_DAYS:g} days for wage records: {PAYROLL_BASIS}")
        return value


class AgreementSettings(BaseModel):
    """Agreements on record (collector/agreements): trust roots for signed PDFs, the RFC 3161 timestamp authority."""

    trust_roots: list[Path] = Field(
        default_factory=list, description="PEM files of the CA certificates whose signatures on imported PDFs are "
                                          "trusted (the e-signature platforms' CAs, and their TSAs')")
    tsa_url: str | None = Field(None, max_length=300, description="the RFC 3161 timestamp authority that seals "
                                "in-product acknowledgements; unset: they stay 'not yet timestamped'")
    tsa_ca_file: Path | None = Field(None, description="PEM file of the CA certificate the TSA's tokens verify under")
    tsa_timeout_seconds: float = Field(10.0, gt=0, le=120)
    seal_retry_seconds: float = Field(60.0, gt=0, description="how often unsealed acknowledgements are retried")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024,
                                  description="a signed PDF may be this large; bigger: 413")

    @field_validator("tsa_url")
    @classmethod
    def _tsa_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("tsa_url starts with https:// or http://")
        return value


class WitnessSetting(BaseModel):
    """A witness the collector gives its tree heads to (shoumi-witness; collector/evidence/witnesses.py)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="its name in its cosignatures")
    url: str = Field(max_length=200, description="where it serves POST /add-checkpoint, e.g. http://127.0.0.1:8095")
    public_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="its Ed25519 public key, 64 hex digits "
                            "(shoumi-witness public-key)")

    @field_validator("url")
    @classmethod
    def _witness_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("a witness url starts with https:// (or http:// on loopback)")
        return value.rstrip("/")

    def key(self) -> Any:
        """The name and raw key, as the evidence bundle carries them."""
        from collector.evidence.bundle import WitnessKey
        return WitnessKey(self.name, bytes.fromhex(self.public_key))


class OidcSettings(BaseModel):
    """An OpenID Connect provider (collector/people/sso/oidc.py; docs/sso.md)."""

    issuer: str = Field(max_length=300, description="the issuer; discovery at ISSUER/.well-known/openid-configuration")
    client_id: str = Field(min_length=1, max_length=300)
    client_secret: SecretStr | None = Field(None, description="the client secret (secret: never logged)")
    client_secret_file: Path | None = Field(None, description="...or a file (0600) holding it, read at start")
    label: str = Field("SSO", max_length=60, description="the button says 'Sign in with LABEL'")
    scopes: str = "openid profile email"
    groups_claim: str = Field("groups", description="the ID token claim listing the person's groups")
    username_claim: str = Field("preferred_username", description="the claim the collector user is named after")
    role_map: dict[str, str] = Field(default_factory=dict, description="group -> role; empty: roles are granted "
                                     "in the collector (a new user waits for IT)")
    timeout_seconds: float = Field(10.0, gt=0, le=60)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("the OIDC issuer is an https:// URL (http:// on loopback for tests)")
        return value.rstrip("/")


class LdapSettings(BaseModel):
    """An LDAP directory (Active Directory) to check passwords by binding as the user (collector/people/sso/ldap.py)."""

    url: str = Field(max_length=300, description="ldaps://dc.example.com or ldap://host:389 (with start_tls)")
    start_tls: bool = Field(False, description="StartTLS on an ldap:// URL")
    ca_file: Path | None = Field(None, description="PEM file of the CA the server's certificate verifies under")
    bind_dn: str | None = Field(None, description="the service account that searches for the user's DN")
    bind_password: SecretStr | None = Field(None, description="its password (secret: never logged)")
    bind_password_file: Path | None = Field(None, description="...or a file (0600) holding it, read at start")
    user_base: str | None = Field(None, description="where users are searched, e.g. ou=staff,dc=example,dc=com")
    user_filter: str = Field("(sAMAccountName={username})", description="{username} is escaped (RFC 4515)")
    user_dn_template: str | None = Field(None, description="without a service account: e.g. "
                                         "uid={username},ou=people,dc=example,dc=com ({username} escaped, RFC 4514)")
    group_attribute: str = "memberOf"
    role_map: dict[str, str] = Field(default_factory=dict, description="group DN or CN -> role (case-insensitive)")
    label: str = Field("LDAP", max_length=60)
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _ldap_url(cls, value: str) -> str:
        if not value.startswith(("ldap://", "ldaps://")):
            raise ValueError("the LDAP url starts with ldaps:// (or ldap://)")
        return value


class WeComLoginSettings(BaseModel):
    """WeCom web login, 企业微信网页授权登录 / 扫码登录 (collector/people/sso/wecom_login.py)."""

    corp_id: str = Field(min_length=1, max_length=64)
    agent_id: str = Field(min_length=1, max_length=32, description="the application's AgentId")
    secret: SecretStr | None = Field(None, description="the application's Secret (secret: never logged)")
    secret_file: Path | None = Field(None, description="...or a file (0600) holding it, read at start")
    api_base_url: str = Field("https://qyapi.weixin.qq.com", max_length=200, description="gettoken, auth/getuserinfo")
    authorize_url: str = Field("https://login.work.weixin.qq.com/wwlogin/sso/login", max_length=300,
                               description="the QR sign-in page (inside WeCom: "
                                           "https://open.weixin.qq.com/connect/oauth2/authorize)")
    label: str = Field("WeCom", max_length=60)
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class SsoSettings(BaseModel):
    """Single sign-on for the web UI (collector/people/sso; docs/sso.md)."""

    oidc: OidcSettings | None = None
    ldap: LdapSettings | None = None
    wecom: WeComLoginSettings | None = None
    local_login: bool = Field(True, description="false: the password form refuses all but the break-glass accounts")
    break_glass: list[str] = Field(default_factory=list, description="local accounts that may sign in with a "
                                   "password while local_login is false (audited)")
    session_minutes: float = Field(60.0, gt=0, le=24 * 60, description="a session a provider signed in ends after "
                                   "this long: the next sign-in asks the provider again")
    redirect_base_url: str | None = Field(None, max_length=200, description="the collector's address for the "
                                          "providers' callbacks, e.g. https://shoumi.example.com; unset: as asked")


class CollectorSettings(BaseSettings):
    """Everything the collector process needs to know."""

    model_config = SettingsConfigDict(env_prefix="SHOUMI_COLLECTOR_", env_nested_delimiter="__")

    data_dir: Path = Path("/var/lib/shoumi-collector")
    database_url: str | None = Field(
        None, description="postgresql://user@host/db to scale out; SQLite under data_dir when unset"
    )
    grpc_listen: str = Field("127.0.0.1:7443", description="the agent listener: mutual TLS")
    enroll_listen: str = Field("127.0.0.1:7444", description="the enrollment listener: TLS with the CA's certificate")
    insecure_dev: bool = Field(False, description="one plaintext listener for everything: local development only")
    tls_names: list[str] = Field(default_factory=list, description="extra DNS names for the server certificate")
    client_cert_days: float = Field(7.0, gt=0, description="lifetime of agents' client certificates")
    http_listen: str = "127.0.0.1:8080"
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024)
    max_events_per_batch: int = Field(1000, ge=1, le=10000)
    enroll_token_ttl_hours: float = Field(24.0, gt=0)
    session_hours: float = Field(12.0, gt=0, description="a session ends this long after sign-in, however used")
    session_idle_minutes: float = Field(30.0, gt=0, description="...or after this long unused")
    password_check_slots: int = Field(
        4, ge=1, le=64, description="argon2 password checks run at once (64 MiB each); more sign-ins wait")
    password_check_wait_seconds: float = Field(
        2.0, gt=0, le=30, description="a sign-in waits this long for a slot, then gets 503 busy, retry")
    ingest_workers: int = Field(4, ge=1, le=64, description="threads that verify and store batches")
    ingest_committers: int = Field(
        0, ge=0, le=16, description="transactions that store batches at once, each on its own connection; "
        "0: 2 on PostgreSQL, 1 on SQLite (one writer at a time)")
    max_streams_per_agent: int = Field(4, ge=1, le=64, description="streams one agent certificate may hold at once")
    enroll_timeout_seconds: float = Field(10.0, gt=0, description="an enrollment call that sends nothing is ended")
    max_enroll_calls: int = Field(
        2048, ge=1, description="enrollment calls served at once (its own listener; a stalled call costs ~40 KB)")
    handshake_timeout_seconds: float = Field(10.0, gt=0, description="a TLS handshake not finished by then is dropped")
    max_connection_age_seconds: float = Field(
        900.0, gt=0, description="streams are closed after this long, so revocation also cuts idle ones"
    )
    max_clock_skew_seconds: float = Field(300.0, gt=0, description="alert when an agent's clock is further off")
    tree_head_seconds: float = Field(60.0, gt=0, description="how often a new signed tree head is made")
    silence_check_seconds: float = Field(5.0, gt=0, description="how often agents' silence is checked")
    detection_seconds: float = Field(0.25, gt=0, description="how often detection runs over newly stored events")
    detection_enabled: bool = Field(
        True, description="run the detection stage in this process (off: another collector on the database runs it, "
                          "or a benchmark measures ingest alone); events are stored either way and looked at later")
    detection_process: bool = Field(
        True, description="serve runs the detection stage in a worker process of its own (the second core), which "
                          "goes on from the stored positions; false: in a thread of the serve process")
    retention_days: float | None = Field(
        365.0, gt=0, description="events older than this are deleted unless a legal hold covers them; unset: kept")
    retention_check_seconds: float = Field(3600.0, gt=0, description="how often retention runs")
    retention: RetentionSettings = RetentionSettings()
    detection: DetectionSettings = DetectionSettings()
    notify: NotifySettings = NotifySettings()
    cases: CasesSettings = CasesSettings()
    agreements: AgreementSettings = AgreementSettings()
    sso: SsoSettings = SsoSettings()
    wecom: WeComSettings | None = Field(None, description="the WeCom application that sends notices to "
                                          "employees and staff messages (collector/wecom; docs/wecom.md)")
    rules_file: Path | None = Field(
        None, description="the detection rules file (TOML, installers/linux/rules.toml.example); unset: defaults")
    witnesses: list[WitnessSetting] = Field(
        default_factory=list, description="witnesses that cosign each new tree head (JSON list of name, url, "
                                          "public_key); the evidence bundle carries their cosignatures")
    witness_timeout_seconds: float = Field(5.0, gt=0, le=60, description="a witness that answers slower is tried "
                                                                         "again at the next head")

    def retention_policy(self) -> "RetentionPolicy":
        """The retention periods in force, per kind of record."""
        from collector.retention.models import RetentionPolicy
        r = self.retention
        return RetentionPolicy(self.retention_days, r.alerts_days, r.cases_days, r.audit_days, r.notifications_days,
                               r.payroll_days)

    def store_location(self) -> str:
        """Returns what open_store() takes: the database URL, or the data directory."""
        return self.database_url or str(self.data_dir)


def parse_listen(text: str) -> tuple[str, int]:
    """Splits HOST:PORT (IPv6 as [::1]:PORT); raises ValueError with a readable reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port)
