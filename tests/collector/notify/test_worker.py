"""The notification worker against a real fake WeCom robot and a real SMTP server on loopback, on every
store backend: what goes out, the robot's 20-a-minute limit with the rest merged, retries, restarts."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from collector.alerts.service import raise_alert
from collector.cases.models import Case, HistoryEntry
from collector.notify.mail import SmtpMailer
from collector.notify.service import claim_deliveries, Target
from collector.notify.wecom import WeComRobot
from collector.notify.worker import NotifyWorker
from collector.storage import open_store

from tests.collector.notify.fakes import Clock, FakeRobot, FakeSmtp, serve_smtp, tls_pair

BASE = "https://shoumi.example.com"
# what must never reach a group chat or an inbox: the person, the file, the machine
PERSONAL = ("zhang", "san", "张三", "finance", "/srv", "salary", "xlsx", "ws-fin", "host")


def raise_high(store: Any, clock: Clock, n: int = 1, severity: str = "high") -> list[int]:
    """Raises ``n`` alerts about a person, a file and a workstation, as detection would."""
    with store.transaction() as tx:
        return [raise_alert(tx=tx, rule="usb_exfiltration", severity=severity, now_ns=clock(), user="zhang.san",
                            agent_id="ws-finance-07", event_ids=[f"e{i}"],
                            summary="zhang.san (张三) copied /srv/finance/salary.xlsx to USB on host ws-finance-07"
                            ).id or 0 for i in range(n)]


def robot_channel(robot: FakeRobot, **kw: Any) -> WeComRobot:
    return WeComRobot(robot.url, base_url=BASE, timeout_s=2.0, **kw)


def mail_channel(smtp: FakeSmtp, **kw: Any) -> SmtpMailer:
    return SmtpMailer(host=smtp.host, port=smtp.port, sender="shoumi@example.com",
                      recipients=["security@example.com", "hr@example.com"], base_url=BASE, starttls=False,
                      timeout_s=2.0, **kw)


def numbers(contents: list[str]) -> list[int]:
    """Every alert or case number the messages name (a message names each once, a title twice in two languages)."""
    return [int(x) for c in contents for x in sorted(set(re.findall(r"#(\d+)", c)))]


def mails(smtp: FakeSmtp) -> list[str]:
    """Subject and body of every email taken."""
    return [f"{m['Subject']}\n{m.get_content()}" for m in smtp.messages]


def statuses(store: Any) -> list[str]:
    with store.read() as tx:
        return [n.status for n in tx.list_notifications(cursor=None, limit=1000).items]


def test_a_high_alert_makes_one_robot_message_and_one_email_with_the_link_and_no_personal_data(
        any_store: Any, clock: Clock, robot: FakeRobot, smtp: FakeSmtp) -> None:
    worker = NotifyWorker(any_store, [robot_channel(robot), mail_channel(smtp)], clock=clock)
    [alert_id] = raise_high(any_store, clock)
    raise_high(any_store, clock, severity="medium")  # below the threshold: no message
    assert worker.run_once() == 2
    assert worker.run_once() == 0
    assert robot.accepted == [
        f"### 高危告警 #{alert_id} (High-severity alert #{alert_id})\n"
        "> 规则 (Rule): usb_exfiltration\n"
        "> 严重程度 (Severity): 高 (high)\n"
        f"[查看告警 (Open the alert)]({BASE}/alerts/{alert_id})"]
    assert robot.bodies[0]["msgtype"] == "markdown"
    [mail] = smtp.messages
    body = mail.get_content()
    assert f"{BASE}/alerts/{alert_id}" in body and f"#{alert_id}" in str(mail["Subject"]) and "高危告警" in mail["Subject"]
    assert smtp.envelopes == [("shoumi@example.com", ["security@example.com", "hr@example.com"])]
    for text in (robot.accepted[0], str(mail["Subject"]), body):
        assert not [word for word in PERSONAL if word in text.lower()], text
    assert statuses(any_store) == ["sent", "sent"]


def test_fifty_alerts_at_once_make_twenty_robot_messages_the_rest_merged_into_one(
        any_store: Any, clock: Clock, robot: FakeRobot, smtp: FakeSmtp) -> None:
    worker = NotifyWorker(any_store, [robot_channel(robot), mail_channel(smtp, per_minute=10)], clock=clock)
    ids = raise_high(any_store, clock, 50)
    worker.run_once()
    assert len(robot.accepted) == 20 and 45009 not in robot.answers
    digest = robot.accepted[-1]
    assert digest.startswith("### 31 条新的高危告警 (31 new high-severity alerts)") and f"{BASE}/alerts" in digest
    assert len(digest.encode()) <= 4096
    assert sorted(numbers(robot.accepted)) == ids  # every alert named once: 19 alone, 31 in the digest
    assert len(smtp.messages) == 10 and sorted(numbers(mails(smtp))) == ids
    assert set(statuses(any_store)) == {"sent"}
    worker.run_once()
    assert len(robot.accepted) == 20  # nothing more to say


def test_alerts_arriving_through_a_minute_never_exceed_twenty_robot_messages_in_any_minute(
        any_store: Any, clock: Clock, robot: FakeRobot) -> None:
    worker = NotifyWorker(any_store, [robot_channel(robot)], clock=clock)
    ids: list[int] = []
    sent_at: list[int] = []
    for _ in range(50):  # one alert every 1.2 s: 50 in a minute
        ids += raise_high(any_store, clock)
        sent_at += [clock()] * worker.run_once()
        clock.advance(1.2)
    for _ in range(5):
        clock.advance(15)
        sent_at += [clock()] * worker.run_once()
    assert 45009 not in robot.answers  # the robot (which counts for itself) never had to refuse one
    assert all(sum(1 for t in sent_at if s <= t < s + 60 * 10**9) <= 20 for s in sent_at)
    assert sorted(numbers(robot.accepted)) == ids and len(robot.accepted) < 50
    assert set(statuses(any_store)) == {"sent"}


def test_a_robot_answering_500_or_45009_gets_a_retry_later_and_nothing_is_lost(
        any_store: Any, clock: Clock, robot: FakeRobot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    worker = NotifyWorker(any_store, [robot_channel(robot)], clock=clock)
    ids = raise_high(any_store, clock, 2)
    robot.fail_next = [500, 45009]
    assert worker.run_once() == 0
    with any_store.read() as tx:
        rows = tx.list_notifications(cursor=None, limit=10).items
    assert {(n.status, n.attempts) for n in rows} == {("pending", 1)} and any("HTTP 500" in (n.last_error or "") for n in rows)
    assert worker.run_once() == 0  # not due yet: nothing is tried
    clock.advance(5)
    assert worker.run_once() == 0  # 45009 this time: wait out the robot's minute
    clock.advance(30)
    assert worker.run_once() == 0 and robot.answers == [-500, 45009]
    clock.advance(31)
    assert worker.run_once() == 2
    assert sorted(numbers(robot.accepted)) == ids and set(statuses(any_store)) == {"sent"}
    assert robot.key not in caplog.text and robot.key[:4] + "…" + robot.key[-4:] in caplog.text  # masked in logs


def test_other_errcodes_are_failures_with_the_errcode_and_are_not_retried(
        any_store: Any, clock: Clock, robot: FakeRobot) -> None:
    worker = NotifyWorker(any_store, [robot_channel(robot)], clock=clock)
    raise_high(any_store, clock)
    robot.fail_next = [93000]
    worker.run_once()
    clock.advance(3600)
    worker.run_once()
    with any_store.read() as tx:
        [row] = tx.list_notifications(cursor=None, limit=10).items
    assert (row.status, row.last_error, row.attempts) == ("failed", "errcode 93000: refused", 1)
    assert robot.accepted == []


def test_email_answered_451_is_retried_with_backoff(any_store: Any, clock: Clock, smtp: FakeSmtp) -> None:
    worker = NotifyWorker(any_store, [mail_channel(smtp)], clock=clock)
    [alert_id] = raise_high(any_store, clock)
    smtp.fail_next = 2
    assert worker.run_once() == 0
    clock.advance(5)
    assert worker.run_once() == 0
    clock.advance(9)
    assert worker.run_once() == 0  # the second wait is 10 s
    clock.advance(1)
    assert worker.run_once() == 1 and numbers(mails(smtp)) == [alert_id]


def test_a_restart_on_the_same_store_sends_nothing_twice(tmp_path: Path, clock: Clock, robot: FakeRobot,
                                                         smtp: FakeSmtp) -> None:
    store = open_store(tmp_path / "collector")
    ids = raise_high(store, clock, 3)
    first = NotifyWorker(store, [robot_channel(robot), mail_channel(smtp)], clock=clock)
    first.run_once()
    ids += raise_high(store, clock, 2)
    first.collect()  # queued, then the collector stops before delivering
    first.close()
    store.close()
    store = open_store(tmp_path / "collector")
    again = NotifyWorker(store, [robot_channel(robot), mail_channel(smtp)], clock=clock)
    again.run_once()
    again.run_once()
    store.close()
    assert sorted(numbers(robot.accepted)) == ids
    assert sorted(numbers(mails(smtp))) == ids


def test_a_crash_between_sending_and_recording_sends_again_after_the_lease(any_store: Any, clock: Clock,
                                                                           robot: FakeRobot) -> None:
    channel = robot_channel(robot)
    worker = NotifyWorker(any_store, [channel], clock=clock, lease_s=120)
    [alert_id] = raise_high(any_store, clock)
    worker.collect()
    with any_store.transaction() as tx:  # a worker leased the message ... and died before recording the result
        [message] = claim_deliveries(tx=tx, target=Target("wecom", channel.key, 20), now_ns=clock(), lease_ns=120 * 10**9)
    channel.deliver(message)
    assert worker.run_once() == 0  # leased: not sent again yet
    clock.advance(121)
    assert worker.run_once() == 1
    assert numbers(robot.accepted) == [alert_id, alert_id]  # at least once: WeCom takes no idempotency key


def test_a_case_change_makes_a_message_without_the_person(any_store: Any, clock: Clock, robot: FakeRobot,
                                                          smtp: FakeSmtp) -> None:
    worker = NotifyWorker(any_store, [robot_channel(robot), mail_channel(smtp)], clock=clock)
    with any_store.transaction() as tx:
        case = tx.add_case(Case(title="张三 salary leak", state="open", subject_user="zhang.san", created_by="sec.li",
                                created_at_ns=clock(), updated_at_ns=clock(), alert_ids=(), incident_first_ns=clock()))
        assert case.id is not None
        tx.add_case_history(HistoryEntry(case_id=case.id, at_ns=clock(), actor="sec.li", action="case.transition",
                                         from_state="open", to_state="under_review"))
    assert worker.run_once() == 2
    assert robot.accepted == [
        f"### 案件 #{case.id} 状态变更 (Case #{case.id} changed)\n"
        "> 状态 (State): 已立案 (open) → 审查中 (under_review)\n"
        f"[查看案件 (Open the case)]({BASE}/cases/{case.id})"]
    body = smtp.messages[0].get_content()
    assert f"{BASE}/cases/{case.id}" in body
    for text in (robot.accepted[0], body, str(smtp.messages[0]["Subject"])):
        assert not [w for w in (*PERSONAL, "sec.li", "leak") if w in text.lower()], text


def test_email_over_starttls_with_a_login(any_store: Any, clock: Clock, tmp_path: Path) -> None:
    server_tls, client_tls = tls_pair(tmp_path)
    for smtp in serve_smtp(FakeSmtp(tls=server_tls, credentials=("shoumi", "s3cret"))):
        worker = NotifyWorker(any_store, [SmtpMailer(
            host=smtp.host, port=smtp.port, sender="shoumi@example.com", recipients=["security@example.com"],
            base_url=BASE, starttls=True, username="shoumi", password="s3cret", tls_context=client_tls)], clock=clock)
        [alert_id] = raise_high(any_store, clock)
        assert worker.run_once() == 1
        assert smtp.logins == ["shoumi"] and numbers(mails(smtp)) == [alert_id]


def test_email_without_starttls_on_a_server_that_demands_a_login_fails_with_the_code(
        any_store: Any, clock: Clock) -> None:
    for smtp in serve_smtp(FakeSmtp(credentials=("shoumi", "s3cret"))):
        worker = NotifyWorker(any_store, [mail_channel(smtp)], clock=clock)
        raise_high(any_store, clock)
        assert worker.run_once() == 0
        with any_store.read() as tx:
            [row] = tx.list_notifications(cursor=None, limit=5).items
        assert (row.status, row.last_error) == ("failed", "SMTP 530")
