"""The notification stage: a background job that fills the outbox and delivers it.

Like detection, it reads the stored stream of what happened (alerts, case changes) from recorded
positions, never inside the transactions that raise alerts or move cases, so a robot that is slow or
down delays nothing else. Each run: a write transaction per source (alerts, case changes) turns
what is new into outbox rows and moves that source's position (collector/notify/service.py
``collect_alerts``, ``collect_case_changes``); then per target one transaction leases
the due rows as the messages the target's sliding minute has room for, the messages are sent with
no transaction open, and one transaction per message records the result. On PostgreSQL one
collector at a time plans (an advisory lock) and the window is in the database, so several
collectors on one database keep each robot under its limit together.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable, Protocol, Sequence

from collector.notify.mail import SmtpMailer
from collector.notify.models import Attempt, Notification
from collector.notify.service import Target, claim_deliveries, collect_alerts, collect_case_changes, finish_delivery
from collector.notify.wecom import WeComRobot
from collector.settings import NotifySettings
from collector.storage.base import Store

__all__ = ["Channel", "NotifyWorker", "build_worker"]

log = logging.getLogger("shoumi.collector.notify")


class Channel(Protocol):
    """A transport to one target (a WeCom robot, the mail list)."""

    channel: str
    key: str
    label: str  # for logs and the API: never a secret
    per_minute: int

    def deliver(self, notes: Sequence[Notification]) -> Attempt: ...
    def close(self) -> None: ...


class NotifyWorker:
    """Fills the outbox from new alerts and case changes and delivers it to every channel."""

    def __init__(self, store: Store, channels: Sequence[Channel], *, clock: Callable[[], int] = time.time_ns,
                 min_severity: str = "high", case_changes: bool = True, lease_s: float = 300.0,
                 max_attempts: int = 100) -> None:
        self.store = store
        self.channels = list(channels)
        self.clock = clock
        self.min_severity = min_severity
        self.case_changes = case_changes
        self.lease_ns = int(lease_s * 1e9)
        self.max_attempts = max_attempts
        self.counters: Counter[str] = Counter()

    def targets(self) -> list[Target]:
        """Where messages go."""
        return [Target(c.channel, c.key, c.per_minute) for c in self.channels]

    def collect(self) -> int:
        """Turns what is new into outbox rows; returns how many."""
        added = 0
        with self.store.transaction() as tx:
            if not tx.claim_notify():
                return 0
            added += collect_alerts(tx=tx, targets=self.targets(), now_ns=self.clock(), min_severity=self.min_severity)
        if self.case_changes:
            with self.store.transaction() as tx:
                if not tx.claim_notify():
                    return added
                added += collect_case_changes(tx=tx, targets=self.targets(), now_ns=self.clock())
        self.counters["notifications.queued"] += added
        return added

    def deliver(self) -> int:
        """Sends what is due, within each target's limit; returns how many messages went out."""
        sent = 0
        for channel in self.channels:
            with self.store.transaction() as tx:
                if not tx.claim_notify():
                    return sent
                messages = claim_deliveries(tx=tx, target=Target(channel.channel, channel.key, channel.per_minute),
                                            now_ns=self.clock(), lease_ns=self.lease_ns)
            failing: Attempt | None = None
            for message in messages:
                if failing is not None:  # the target is struggling: the rest waits with the message that failed
                    attempt = Attempt(ok=False, retry=True, error=f"not tried: {failing.error}",
                                      retry_after_s=failing.retry_after_s)
                else:
                    # if the process dies here, the lease runs out and the message is sent again: at least once
                    attempt = channel.deliver(message)
                with self.store.transaction() as tx:
                    status = finish_delivery(tx=tx, message=message, attempt=attempt, now_ns=self.clock(),
                                             max_attempts=self.max_attempts)
                self.counters[f"{channel.channel}.{status}"] += 1
                if attempt.ok:
                    sent += 1
                if not attempt.ok and attempt.retry:
                    failing = attempt
        return sent

    def run_once(self) -> int:
        """Collects and delivers once; returns how many messages went out."""
        self.collect()
        return self.deliver()

    def close(self) -> None:
        """Closes every channel's connections."""
        for channel in self.channels:
            channel.close()


def build_worker(store: Store, settings: NotifySettings, *,
                 clock: Callable[[], int] = time.time_ns) -> NotifyWorker | None:
    """The worker for these settings (None when no robot and no mail list is set), with one channel per
    robot and one for the mail list; logs where it sends, keys masked."""
    if not settings.enabled():
        return None
    channels: list[Channel] = [
        WeComRobot(url.get_secret_value(), base_url=settings.public_base_url, lang=settings.language,
                   per_minute=settings.wecom_per_minute, timeout_s=settings.timeout_seconds)
        for url in settings.wecom_webhooks]
    if settings.smtp_host is not None and settings.mail_to:
        channels.append(SmtpMailer(
            host=settings.smtp_host, port=settings.smtp_port, sender=settings.mail_from, recipients=settings.mail_to,
            base_url=settings.public_base_url, lang=settings.language, starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            per_minute=settings.mail_per_minute, timeout_s=settings.timeout_seconds))
    log.info("notifications go to %s", ", ".join(c.label for c in channels))
    return NotifyWorker(store, channels, clock=clock, min_severity=settings.min_severity,
                        case_changes=settings.case_changes)
