"""WeCom (企业微信) group robots: POST a markdown message to the robot's webhook; one of two transports.

A robot answers HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}`` when it took the message. It takes
at most 20 messages a minute and answers errcode 45009 beyond that; a markdown content is at most
4096 bytes of UTF-8. 45009, 5xx, timeouts and connection errors are worth retrying; any other
errcode (a wrong key 93000, bad content 40058 ...) is recorded as a failure with the errcode.

The webhook URL carries the robot's key, which lets anyone post to the group: it is never logged or
stored in full. ``mask`` shows its first and last four characters; ``target_key`` is a hash.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Sequence
from urllib.parse import parse_qsl, urlsplit

import httpx

from collector.notify.messages import Language, wecom_markdown
from collector.notify.models import Attempt, Notification
from collector.wecom.client import mask_httpx_urls

__all__ = ["WeComRobot", "mask", "target_key", "RATE_LIMITED"]

log = logging.getLogger("shoumi.collector.notify")

RATE_LIMITED = 45009
_KEY_IN_URL = re.compile(r"(key=)[^&\s\"']+")


mask_httpx_urls(_KEY_IN_URL)  # a robot's key is cut out of httpx's log lines


def mask(url: str) -> str:
    """The webhook URL with its key hidden but for its ends: .../send?key=693a…5aaa."""
    parts = urlsplit(url)
    key = dict(parse_qsl(parts.query)).get("key", "")
    shown = f"{key[:4]}…{key[-4:]}" if len(key) > 8 else "…"
    return f"{parts.scheme}://{parts.netloc}{parts.path}?key={shown}"


def target_key(url: str) -> str:
    """A stable key of a robot for the outbox, from which its webhook key cannot be read back."""
    return "wecom:" + hashlib.sha256(url.encode()).hexdigest()[:16]


class WeComRobot:
    """One group robot: renders a notification or a digest as markdown and posts it."""

    channel = "wecom"

    def __init__(self, url: str, *, base_url: str, lang: Language = "both", per_minute: int = 20,
                 timeout_s: float = 5.0, transport: httpx.BaseTransport | None = None) -> None:
        self._url = url
        self.key = target_key(url)
        self.label = mask(url)
        self.per_minute = per_minute
        self._base_url = base_url
        self._lang = lang
        self._client = httpx.Client(timeout=timeout_s, transport=transport, follow_redirects=False)

    def deliver(self, notes: Sequence[Notification]) -> Attempt:
        """Posts one message (a digest when there are several notifications); says how it went."""
        content = wecom_markdown(notes, base_url=self._base_url, lang=self._lang)
        try:
            answer = self._client.post(self._url, json={"msgtype": "markdown", "markdown": {"content": content}})
        except httpx.HTTPError as exc:  # timeouts, refused connections: the robot may take it later
            log.warning("robot %s unreachable: %s", self.label, type(exc).__name__)
            return Attempt(ok=False, retry=True, error=f"unreachable: {type(exc).__name__}")
        if answer.status_code >= 500 or answer.status_code == 429:
            log.warning("robot %s answered HTTP %d", self.label, answer.status_code)
            return Attempt(ok=False, retry=True, error=f"HTTP {answer.status_code}")
        if answer.status_code != 200:
            return Attempt(ok=False, error=f"HTTP {answer.status_code}")
        try:
            body = answer.json()
            errcode = int(body.get("errcode", -1))
        except (ValueError, AttributeError, TypeError):
            return Attempt(ok=False, retry=True, error="answer is not the robot's JSON")
        if errcode == 0:
            return Attempt(ok=True)
        errmsg = str(body.get("errmsg", ""))[:100]
        secret = dict(parse_qsl(urlsplit(self._url).query)).get("key", "")
        if secret:
            errmsg = errmsg.replace(secret, "…")
        if errcode == RATE_LIMITED:  # another sender used up the robot's minute: wait out the window
            log.warning("robot %s is rate limited (45009)", self.label)
            return Attempt(ok=False, retry=True, error="errcode 45009 (rate limited)", retry_after_s=60.0)
        log.error("robot %s refused a message: errcode %d %s", self.label, errcode, errmsg)
        return Attempt(ok=False, error=f"errcode {errcode}: {errmsg}")

    def close(self) -> None:
        """Closes the HTTP connections."""
        self._client.close()
