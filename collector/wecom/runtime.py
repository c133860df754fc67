"""The WeCom application at start: its client checked once, the callback crypto, the notice outbox.

Decision (docs/wecom.md): a WeCom that refuses the settings at start (gettoken answers 40013 invalid corp id,
40001 wrong secret, ...) or cannot be reached does **not** stop the collector, which must keep taking agents'
events. It says so in the log (errcode and errmsg, never the secret), WeCom is left off, and notices to
WeCom stay pending with that reason until the settings are fixed and the collector restarted; employees
without a WeCom userid still get email. A malformed setting (no secret, a bad EncodingAESKey) is refused
before start like any other setting error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from collector.notify.mail import SmtpMailer
from collector.settings import CollectorSettings
from collector.storage.base import Store
from collector.wecom.client import WeComClient, WeComError
from collector.wecom.crypto import CallbackCrypto
from collector.wecom.service import NoticeWorker
from collector.wecom.staff import StaffMessages

__all__ = ["WeComRuntime", "build_wecom"]

log = logging.getLogger("shoumi.collector.wecom")


@dataclass
class WeComRuntime:
    """What the views and the background jobs use (``app.state.wecom``)."""

    client: WeComClient | None  # None: not configured or refused at start
    agent_id: int | None
    crypto: CallbackCrypto | None  # None: no callback URL configured (callbacks answered 404)
    worker: NoticeWorker
    problem: str | None = None  # why WeCom is off
    staff: StaffMessages | None = None  # staff notifications to people's WeCom (None: off)

    @property
    def enabled(self) -> bool:
        return self.client is not None


def build_wecom(settings: CollectorSettings, store: Store, *, bridge: Any = None) -> WeComRuntime:
    """Builds the WeCom part from the settings; raises ValueError (said before start) for a malformed setting."""
    w, notify = settings.wecom, settings.notify
    mailer = None
    if notify.smtp_host:
        mailer = SmtpMailer(host=notify.smtp_host, port=notify.smtp_port, sender=notify.mail_from,
                            recipients=["employees@localhost"], base_url=notify.public_base_url,
                            starttls=notify.smtp_starttls, username=notify.smtp_username,
                            password=notify.smtp_password.get_secret_value() if notify.smtp_password else None,
                            timeout_s=notify.timeout_seconds)
    client, crypto, problem, agent_id = None, None, None, None
    if w is None:
        problem = "WeCom is not configured (wecom.corp_id)"
    else:
        agent_id = w.agent_id
        secret = w.app_secret()
        callback = w.callback()
        if callback is not None:
            crypto = CallbackCrypto(callback[0].get_secret_value(), callback[1].get_secret_value(), w.corp_id)
        client = WeComClient(w.corp_id, secret, base_url=w.base_url, timeout_s=w.timeout_seconds)
        if w.check_at_start:
            try:
                client.check()
                log.info("WeCom application %d of corp %s: access token obtained", w.agent_id, w.corp_id)
            except WeComError as exc:
                problem = f"WeCom refused the settings at start: {exc}"
                log.error("%s: notices to WeCom wait until the settings are fixed (email still goes out)", problem)
                client.close()
                client = None
    worker = NoticeWorker(store, wecom=client, agent_id=agent_id, base_url=notify.public_base_url, mailer=mailer,
                          mail_from=notify.mail_from, bridge=bridge,
                          retry_s=w.retry_seconds if w is not None else 60.0, wecom_problem=problem)
    staff = None
    if client is not None and agent_id is not None and w is not None and w.staff_messages:
        staff = StaffMessages(store, client, agent_id, base_url=notify.public_base_url, lang=notify.language)
    return WeComRuntime(client, agent_id, crypto, worker, problem, staff)
