"""Staff notifications to a person's WeCom, as an application message (besides the group robots).

Who is told what:

- an analyst **assigned an alert** (the audit's ``alert.assign``, to an account with a WeCom userid) gets that
  alert's message;
- **HR is asked to confirm a case**: a case that reaches ``security_confirmed`` is HR's turn, and every HR
  account with a WeCom userid gets the case's message.

The rows live in the notifications outbox (collector/notify) with channel ``wecom_app`` and the target
``wecom-user:<hash of the userid>``; they are delivered with the outbox's leases, back-off and rate window by
a ``NotifyWorker`` whose channels are the people (``WeComPerson``). The message says what the robots say (a
number, the rule, the severity, the state change; collector/notify/messages.py), never a person's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Callable, Sequence

from collector.notify.messages import Language, wecom_markdown
from collector.notify.models import Attempt, Notification
from collector.notify.worker import NotifyWorker
from collector.storage.base import Store
from collector.wecom.client import WeComClient, WeComError, WeComRateLimited
from collector.wecom.models import account_subject

__all__ = ["WeComPerson", "StaffMessages", "person_key", "CHANNEL"]

log = logging.getLogger("shoumi.collector.wecom")
CHANNEL = "wecom_app"
_HR_TURN = "security_confirmed"


def person_key(userid: str) -> str:
    """The outbox target of one person's WeCom (the userid hashed: the column is short, and it is not shown)."""
    return "wecom-user:" + hashlib.sha256(userid.encode()).hexdigest()[:16]


class WeComPerson:
    """One person's WeCom as a notification channel (collector/notify/worker.py ``Channel``)."""

    channel = CHANNEL

    def __init__(self, client: WeComClient, agent_id: int, userid: str, *, base_url: str, lang: Language = "both",
                 per_minute: int = 30) -> None:
        self.client, self.agent_id, self.userid = client, agent_id, userid
        self.key, self.label, self.per_minute = person_key(userid), f"WeCom user {userid}", per_minute
        self._base_url, self._lang = base_url, lang

    def deliver(self, notes: Sequence[Notification]) -> Attempt:
        """Sends one markdown application message (a digest when there are several)."""
        content = wecom_markdown(notes, base_url=self._base_url, lang=self._lang)
        try:
            result = self.client.send_app_message(self.userid, self.agent_id, markdown=content)
        except WeComRateLimited as exc:
            return Attempt(ok=False, retry=True, error=str(exc), retry_after_s=exc.retry_after_s)
        except WeComError as exc:
            return Attempt(ok=False, retry=exc.retry, error=str(exc)[:200])
        if not result.delivered_to(self.userid):
            return Attempt(ok=False, error=f"WeCom did not deliver to {self.userid} (invaliduser)")
        return Attempt(ok=True)

    def close(self) -> None:
        """The client is shared: nothing to close here."""


class StaffMessages:
    """Fills the outbox for people with a WeCom userid and delivers it; ``run_once`` is one pass."""

    def __init__(self, store: Store, client: WeComClient, agent_id: int, *, base_url: str, lang: Language = "both",
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.store, self.client, self.agent_id = store, client, agent_id
        self.base_url, self.lang, self.clock = base_url, lang, clock

    def _people(self) -> dict[str, tuple[str, str]]:
        """Account -> (role, WeCom userid) of every enabled account that has one."""
        with self.store.read() as tx:
            found = {}
            for u in tx.list_users():
                userid = None if u.disabled else tx.get_wecom_userid(account_subject(u.username))
                if userid:
                    found[u.username] = (u.role, userid)
            return found

    def collect(self, people: dict[str, tuple[str, str]]) -> int:
        """Turns new assignments and cases waiting for HR into outbox rows; returns how many."""
        now, added = self.clock(), 0
        with self.store.transaction() as tx:
            if not tx.claim_notify():
                return 0
            rows = tx.audit_rows(after_id=tx.notify_position("wecom_app_audit"), limit=500)
            out = []
            for r in rows:
                if r.action != "alert.assign":
                    continue
                to = json.loads(r.details).get("to") if isinstance(r.details, str) else dict(r.details).get("to")
                alert = tx.get_alert(int(r.target)) if str(r.target).isdigit() else None
                if to in people and alert is not None:
                    out.append(Notification(channel=CHANNEL, target=person_key(people[to][1]), kind="alert",
                                            source_id=alert.id or 0, number=alert.id or 0, rule=alert.rule,
                                            severity=alert.severity, created_at_ns=now, next_attempt_ns=now))
            if rows:
                tx.set_notify_position(source="wecom_app_audit", after_id=rows[-1].id)
            added += tx.add_notifications(out)
        hr = [userid for role, userid in people.values() if role == "hr"]
        with self.store.transaction() as tx:
            if not tx.claim_notify():
                return added
            tx.case_history_settled()
            changes = tx.case_changes_after(after_id=tx.notify_position("wecom_app_cases"), limit=500)
            out = [Notification(channel=CHANNEL, target=person_key(userid), kind="case", source_id=c.id,
                                number=c.case_id, from_state=c.from_state or "", to_state=c.to_state,
                                created_at_ns=now, next_attempt_ns=now)
                   for c in changes if c.to_state == _HR_TURN for userid in hr]
            if changes:
                tx.set_notify_position(source="wecom_app_cases", after_id=changes[-1].id)
            added += tx.add_notifications(out)
        return added

    def run_once(self) -> int:
        """Collects, then delivers to every person with a userid; returns how many messages went out."""
        people = self._people()
        self.collect(people)
        channels = [WeComPerson(self.client, self.agent_id, userid, base_url=self.base_url, lang=self.lang)
                    for _, userid in sorted(set(people.values()), key=lambda p: p[1])]
        if not channels:
            return 0
        worker = NotifyWorker(self.store, channels, clock=self.clock)
        return worker.deliver()
