"""A client of the WeCom server API (https://qyapi.weixin.qq.com/cgi-bin/...) for one application of one corp.

The access token comes from ``gettoken`` (corp id + the application's secret) and lives ``expires_in``
seconds (7200); it is cached and shared by every thread, refreshed ``refresh_margin_s`` before it ends,
one refresh at a time. An API call answered errcode 42001 (expired), 40014 (invalid) or 40001 (invalid
credential, e.g. the secret was rotated) gets a new token and is retried once.

Errors the caller sees:

- ``WeComRateLimited`` (errcode 45009/45033 ...): worth retrying after ``retry_after_s``; the outbox does.
- ``WeComUnavailable``: WeCom did not answer (connection refused, timeout, HTTP 5xx, not JSON): retry later.
- ``WeComError``: any other errcode, with ``errcode`` and ``errmsg``; not worth retrying unchanged.

The secret and the token are never in an exception, a log line or a repr: the token travels in the query
string, so the URLs httpx logs have it cut out (``access_token=…``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import httpx
from pydantic import SecretStr

__all__ = ["WeComClient", "WeComError", "WeComRateLimited", "WeComUnavailable", "SendResult", "OAuthUser",
           "DEFAULT_BASE_URL", "TOKEN_ERRCODES", "RATE_ERRCODES"]

log = logging.getLogger("shoumi.collector.wecom")

DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com"
TOKEN_ERRCODES = frozenset({42001, 40014, 40001})  # expired / invalid access_token / invalid credential
RATE_ERRCODES = frozenset({45009, 45033, 45047})  # api freq out of limit / too many concurrent / too many sends
_SECRETS_IN_URL = re.compile(r"((?:access_token|corpsecret)=)[^&\s\"']+")


class MaskUrlSecrets(logging.Filter):
    """httpx logs every request's full URL at INFO: what ``pattern``'s group 1 precedes is cut out first."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.pattern.sub(r"\1…", str(a)) if isinstance(a, (str, httpx.URL)) else a
                                for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self.pattern.sub(r"\1…", record.msg)
        return True


def mask_httpx_urls(pattern: re.Pattern[str]) -> None:
    """Installs a ``MaskUrlSecrets`` on httpx's logger once per pattern."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, MaskUrlSecrets) and f.pattern.pattern == pattern.pattern for f in httpx_log.filters):
        httpx_log.addFilter(MaskUrlSecrets(pattern))


mask_httpx_urls(_SECRETS_IN_URL)


class WeComError(Exception):
    """WeCom refused a call: errcode and errmsg as it answered them (never the secret or the token)."""

    retry = False

    def __init__(self, errcode: int, errmsg: str, *, api: str = "") -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.api = api
        super().__init__(f"WeCom {api or 'API'} answered errcode {errcode}: {errmsg}")


class WeComRateLimited(WeComError):
    """WeCom's rate limit (45009 ...): try again after ``retry_after_s`` seconds."""

    retry = True

    def __init__(self, errcode: int, errmsg: str, *, api: str = "", retry_after_s: float = 60.0) -> None:
        super().__init__(errcode, errmsg, api=api)
        self.retry_after_s = retry_after_s


class WeComUnavailable(WeComError):
    """WeCom did not answer usefully (unreachable, timeout, HTTP 5xx, not JSON): try again later."""

    retry = True

    def __init__(self, reason: str, *, api: str = "") -> None:
        self.reason = reason
        super().__init__(-1, reason, api=api)
        self.args = (f"WeCom {api or 'API'} unavailable: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class SendResult:
    """What ``message/send`` answered: the message id, and the recipients WeCom did not deliver to."""

    msgid: str
    invaliduser: tuple[str, ...] = ()
    invalidparty: tuple[str, ...] = ()
    invalidtag: tuple[str, ...] = ()
    unlicenseduser: tuple[str, ...] = ()

    def delivered_to(self, userid: str) -> bool:
        """Whether WeCom took the message for this userid (it names the ones it could not reach)."""
        return bool(self.msgid) and userid not in self.invaliduser and userid not in self.unlicenseduser


@dataclass(frozen=True)
class OAuthUser:
    """``auth/getuserinfo``'s answer: a member's userid, or only an openid for someone outside the corp."""

    userid: str | None
    openid: str | None = None
    user_ticket: str | None = None


def _ids(value: Any) -> tuple[str, ...]:
    """WeCom lists ids as one string joined by "|" ("" when none)."""
    if isinstance(value, list):
        return tuple(str(v) for v in value if v)
    return tuple(v for v in str(value or "").split("|") if v)


class WeComClient:
    """One application (corp id + its secret) against one base URL; thread-safe."""

    def __init__(self, corp_id: str, secret: SecretStr | str, *, base_url: str = DEFAULT_BASE_URL,
                 timeout_s: float = 5.0, refresh_margin_s: float = 300.0,
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.corp_id = corp_id
        self._secret = secret if isinstance(secret, SecretStr) else SecretStr(secret)
        self.base_url = base_url.rstrip("/")
        self._margin = refresh_margin_s
        self._clock = clock
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                    follow_redirects=False)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_until = 0.0
        self.token_fetches = 0  # how many times gettoken was called (the tests look)

    def __repr__(self) -> str:
        return f"WeComClient(corp_id={self.corp_id!r}, base_url={self.base_url!r})"

    # --- transport -----------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, params: Mapping[str, Any], body: Any = None) -> dict[str, Any]:
        api = path.removeprefix("/cgi-bin/")
        try:
            answer = self._client.request(method, path, params=dict(params), json=body)
        except httpx.HTTPError as exc:
            log.warning("WeCom %s unreachable: %s", api, type(exc).__name__)
            raise WeComUnavailable(f"unreachable ({type(exc).__name__})", api=api) from None
        if answer.status_code >= 500 or answer.status_code == 429:
            raise WeComUnavailable(f"HTTP {answer.status_code}", api=api)
        if answer.status_code != 200:
            raise WeComError(-answer.status_code, f"HTTP {answer.status_code}", api=api)
        try:
            data: dict[str, Any] = answer.json()
            errcode = int(data.get("errcode", 0))
        except (ValueError, AttributeError, TypeError):
            raise WeComUnavailable("the answer is not WeCom's JSON", api=api) from None
        if errcode == 0:
            return data
        errmsg = self._scrub(str(data.get("errmsg", ""))[:200])
        if errcode in RATE_ERRCODES:
            log.warning("WeCom %s rate limited (%d)", api, errcode)
            raise WeComRateLimited(errcode, errmsg, api=api)
        if errcode == -1:  # "system busy"
            raise WeComUnavailable(f"errcode -1: {errmsg}", api=api)
        raise WeComError(errcode, errmsg, api=api)

    def _scrub(self, text: str) -> str:
        secret = self._secret.get_secret_value()
        if secret:
            text = text.replace(secret, "…")
        if self._token:
            text = text.replace(self._token, "…")
        return text

    # --- the access token ----------------------------------------------------------------------------
    def token(self, *, stale: str | None = None) -> str:
        """A valid access token; fetched when none is cached, it is about to end, or it is ``stale``."""
        with self._lock:
            fresh = self._token is not None and self._clock() < self._token_until and self._token != stale
            if fresh:
                assert self._token is not None
                return self._token
            data = self._call("GET", "/cgi-bin/gettoken",
                              params={"corpid": self.corp_id, "corpsecret": self._secret.get_secret_value()})
            self.token_fetches += 1
            token = str(data.get("access_token") or "")
            if not token:
                raise WeComUnavailable("gettoken answered without access_token", api="gettoken")
            lifetime = float(data.get("expires_in", 7200))
            self._token = token
            self._token_until = self._clock() + max(lifetime - self._margin, lifetime / 2)
            return token

    def check(self) -> None:
        """Gets a token now: raises WeComError (e.g. 40013 invalid corpid, 40001 wrong secret) when wrong."""
        self.token()

    def api(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> dict[str, Any]:
        """Calls an API with the access token; a token WeCom calls expired/invalid is renewed, the call retried once."""
        token = self.token()
        try:
            return self._call(method, path, params={**(params or {}), "access_token": token}, body=body)
        except WeComError as exc:
            if exc.errcode not in TOKEN_ERRCODES:
                raise
            log.info("WeCom token refused (%d): renewing it once", exc.errcode)
        token = self.token(stale=token)
        return self._call(method, path, params={**(params or {}), "access_token": token}, body=body)

    # --- the APIs used ---------------------------------------------------------------------------------
    def send_app_message(self, touser: str | Sequence[str], agentid: int, *, textcard: Mapping[str, str] | None = None,
                         markdown: str | None = None, text: str | None = None, safe: int = 0,
                         enable_duplicate_check: bool = False, duplicate_check_interval: int = 1800) -> SendResult:
        """``message/send``: a textcard ({title, description, url, btntxt}), markdown or text to userids."""
        users = touser if isinstance(touser, str) else "|".join(touser)
        body: dict[str, Any] = {"touser": users, "agentid": int(agentid), "safe": safe,
                                "enable_duplicate_check": int(enable_duplicate_check),
                                "duplicate_check_interval": duplicate_check_interval}
        if textcard is not None:
            body |= {"msgtype": "textcard", "textcard": dict(textcard)}
        elif markdown is not None:
            body |= {"msgtype": "markdown", "markdown": {"content": markdown}}
        elif text is not None:
            body |= {"msgtype": "text", "text": {"content": text}}
        else:
            raise ValueError("send_app_message needs a textcard, markdown or text")
        data = self.api("POST", "/cgi-bin/message/send", body=body)
        return SendResult(msgid=str(data.get("msgid") or ""), invaliduser=_ids(data.get("invaliduser")),
                          invalidparty=_ids(data.get("invalidparty")), invalidtag=_ids(data.get("invalidtag")),
                          unlicenseduser=_ids(data.get("unlicenseduser")))

    def oauth_user(self, code: str) -> OAuthUser:
        """``auth/getuserinfo``: who signed in with this OAuth/QR code (userid for a member, else openid)."""
        data = self.api("GET", "/cgi-bin/auth/getuserinfo", params={"code": code})
        userid = data.get("userid") or data.get("UserId")
        openid = data.get("openid") or data.get("OpenId")
        return OAuthUser(userid=str(userid) if userid else None, openid=str(openid) if openid else None,
                         user_ticket=str(data["user_ticket"]) if data.get("user_ticket") else None)

    def get_user(self, userid: str) -> dict[str, Any]:
        """``user/get``: a member's record (name, department, status: 1 active, 2 disabled, 4 not activated, 5 left)."""
        return self.api("GET", "/cgi-bin/user/get", params={"userid": userid})

    def recall_message(self, msgid: str) -> None:
        """``message/recall``: takes back a message sent within the last 24 hours."""
        self.api("POST", "/cgi-bin/message/recall", body={"msgid": msgid})

    def close(self) -> None:
        """Closes the HTTP connections."""
        self._client.close()
