"""Email over SMTP (smtplib): one message per notification, or a digest; one of two transports.

STARTTLS when configured (with the system's CA store), a login when a user name is set. Connection
errors, timeouts and 4xx answers are retried later; a 5xx answer (a refused sender or recipients)
is recorded as a failure with its code. The password is never logged.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Sequence

from collector.notify.messages import Language, email_message
from collector.notify.models import Attempt, Notification

__all__ = ["SmtpMailer"]

log = logging.getLogger("shoumi.collector.notify")


class SmtpMailer:
    """The mail list of the settings: renders a notification or a digest and sends it to every address."""

    channel = "email"

    def __init__(self, *, host: str, port: int, sender: str, recipients: Sequence[str], base_url: str,
                 lang: Language = "both", starttls: bool = True, username: str | None = None,
                 password: str | None = None, per_minute: int = 10, timeout_s: float = 10.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        if not recipients:
            raise ValueError("email notifications need at least one recipient")
        self.key = "email"
        self.label = f"smtp://{host}:{port}"
        self.per_minute = per_minute
        self._host, self._port, self._sender, self._to = host, port, sender, list(recipients)
        self._base_url, self._lang, self._starttls = base_url, lang, starttls
        self._username, self._password = username, password
        self._timeout = timeout_s
        self._tls = tls_context

    def deliver(self, notes: Sequence[Notification]) -> Attempt:
        """Sends one email (a digest when there are several notifications); says how it went."""
        subject, body = email_message(notes, base_url=self._base_url, lang=self._lang)
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self._sender
        msg["To"] = ", ".join(self._to)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="shoumi")
        msg.set_content(body, charset="utf-8")
        return self.send_message(msg)

    def send_message(self, msg: EmailMessage) -> Attempt:
        """Sends one message to the addresses in its headers (the notices to employees use it too)."""
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls(context=self._tls or ssl.create_default_context())
                if self._username:
                    smtp.login(self._username, self._password or "")
                refused = smtp.send_message(msg)
        except smtplib.SMTPNotSupportedError as exc:  # STARTTLS or a login asked of a server without it
            log.error("mail server %s: %s", self.label, exc)
            return Attempt(ok=False, error=f"not supported by the server: {str(exc)[:80]}")
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            return Attempt(ok=False, retry=all(400 <= c < 500 for c in codes),
                           error=f"recipients refused: {', '.join(map(str, codes))}")
        except smtplib.SMTPResponseException as exc:
            log.warning("mail server %s answered %d", self.label, exc.smtp_code)
            return Attempt(ok=False, retry=400 <= exc.smtp_code < 500, error=f"SMTP {exc.smtp_code}")
        except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timed out, TLS failed
            log.warning("mail server %s unreachable: %s", self.label, type(exc).__name__)
            return Attempt(ok=False, retry=True, error=f"unreachable: {type(exc).__name__}")
        if refused:
            log.warning("mail server %s refused %d recipients", self.label, len(refused))
        return Attempt(ok=True)

    def close(self) -> None:
        """Nothing held between messages."""
