"""The WeCom application's settings (``SHOUMI_COLLECTOR_WECOM__...``): notices to employees, staff messages.

Secrets (the application's Secret, the callback Token and EncodingAESKey) are SecretStr or files read at
start: never logged, never in the audit, never in an error message.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from collector.wecom.client import DEFAULT_BASE_URL

__all__ = ["WeComSettings", "read_secret"]


def read_secret(value: SecretStr | None, path: Path | None, *, what: str) -> SecretStr:
    """The secret given inline or in a file (stripped); ValueError naming ``what`` (never the value)."""
    if value is not None and value.get_secret_value():
        return value
    if path is None:
        raise ValueError(f"wecom.{what} (or wecom.{what}_file) is not set")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"wecom.{what}_file {path} cannot be read ({type(exc).__name__})") from None
    if not text:
        raise ValueError(f"wecom.{what}_file {path} is empty")
    return SecretStr(text)


class WeComSettings(BaseModel):
    """One WeCom application (自建应用) of one corp: what sends notices and staff messages."""

    corp_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="the CorpID (ww...)")
    agent_id: int = Field(ge=1, description="the application's AgentId")
    secret: SecretStr | None = Field(None, description="the application's Secret (secret: never logged)")
    secret_file: Path | None = Field(None, description="...or a file (0600) holding it, read at start")
    base_url: str = Field(DEFAULT_BASE_URL, max_length=200, description="the WeCom API (tests: a fake server)")
    callback_token: SecretStr | None = Field(None, description="the callback URL's Token (接收消息: Token)")
    callback_token_file: Path | None = None
    encoding_aes_key: SecretStr | None = Field(None, description="the callback URL's EncodingAESKey (43 characters)")
    encoding_aes_key_file: Path | None = None
    check_at_start: bool = Field(True, description="get an access token at start: a wrong corp id or secret is "
                                                   "said in the log, and WeCom is left off until fixed")
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    retry_seconds: float = Field(60.0, gt=0, description="a notice WeCom did not take is tried again after this "
                                                         "(doubling, at most an hour); 45009: after the rate window")
    staff_messages: bool = Field(True, description="also send staff notifications to people with a WeCom userid")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("wecom.base_url starts with https:// (http:// only for a local fake)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _secret_given(self) -> "WeComSettings":
        if (self.secret is None or not self.secret.get_secret_value()) and self.secret_file is None:
            raise ValueError("wecom.secret or wecom.secret_file is required with wecom.corp_id")
        return self

    def app_secret(self) -> SecretStr:
        """The application's Secret (from the setting or its file)."""
        return read_secret(self.secret, self.secret_file, what="secret")

    def callback(self) -> tuple[SecretStr, SecretStr] | None:
        """(Token, EncodingAESKey) of the callback URL, or None when it is not configured."""
        if self.callback_token is None and self.callback_token_file is None:
            return None
        return (read_secret(self.callback_token, self.callback_token_file, what="callback_token"),
                read_secret(self.encoding_aes_key, self.encoding_aes_key_file, what="encoding_aes_key"))
