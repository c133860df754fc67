"""The texts of notifications: Chinese with the English in brackets, one language on request, digests
within WeCom's 4096 bytes, nothing stored can inject markdown; the delivery plan and backoff (pure)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from collector.notify.messages import email_message, wecom_markdown
from collector.notify.models import Notification, can_move
from collector.notify.service import backoff_ns, plan

BASE = "https://shoumi.example.com"


def alert(n: int, rule: str = "read_burst", severity: str = "high") -> Notification:
    return Notification(channel="wecom", target="wecom:x", kind="alert", source_id=n, number=n, rule=rule,
                        severity=severity, created_at_ns=1, next_attempt_ns=1, id=n)


def case(n: int, to: str = "hr_confirmed") -> Notification:
    return Notification(channel="wecom", target="wecom:x", kind="case", source_id=1000 + n, number=n,
                        from_state="security_confirmed", to_state=to, created_at_ns=1, next_attempt_ns=1, id=1000 + n)


def test_one_language_on_request() -> None:
    zh = wecom_markdown([alert(5)], base_url=BASE, lang="zh")
    en = wecom_markdown([alert(5)], base_url=BASE, lang="en")
    assert zh == f"### 高危告警 #5\n> 规则: read_burst\n> 严重程度: 高\n[查看告警]({BASE}/alerts/5)"
    assert en == f"### High-severity alert #5\n> Rule: read_burst\n> Severity: high\n[Open the alert]({BASE}/alerts/5)"
    subject, body = email_message([case(3)], base_url=f"{BASE}/", lang="zh")
    assert subject == "[Shoumi] 案件 #3 状态变更" and f"{BASE}/cases/3" in body and "安全已确认 → 人事已确认" in body


def test_an_opened_case_is_a_new_case() -> None:
    opened = Notification(channel="email", target="email", kind="case", source_id=1, number=9, to_state="open",
                          created_at_ns=1, next_attempt_ns=1)
    assert wecom_markdown([opened], base_url=BASE) == (
        f"### 新案件 #9 (New case #9)\n> 状态 (State): 已立案 (open)\n[查看案件 (Open the case)]({BASE}/cases/9)")


def test_a_digest_of_thousands_fits_in_4096_bytes_and_says_how_many_more() -> None:
    notes = [alert(100_000 + i) for i in range(3000)] + [case(i) for i in range(500)]
    text = wecom_markdown(notes, base_url=BASE)
    assert len(text.encode()) <= 4096
    assert text.startswith("### 3500 条新通知 (3500 new notifications)")
    shown = len(re.findall(r"#1\d{5}", text))
    assert 100 < shown < 3000 and f"…及其他 {3000 - shown} 条 (… and {3000 - shown} more)" in text
    assert text.endswith(f"[查看告警队列 (Open the alert queue)]({BASE}/alerts)\n[查看案件 (Open the cases)]({BASE}/cases)")


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 10**15), st.text(max_size=80)), min_size=1, max_size=400),
       st.text(max_size=300), st.sampled_from(["both", "zh", "en"]))
def test_every_message_fits_and_carries_nothing_but_safe_words(items: list[tuple[bool, int, str]], junk: str,
                                                               lang: str) -> None:
    notes = [alert(n, rule=junk + word, severity=word) if is_alert else case(n, to=word + junk)
             for is_alert, n, word in items]
    text = wecom_markdown(notes, base_url=BASE, lang=lang)
    assert len(text.encode()) <= 4096
    # what stored text can put in a message is reduced to [A-Za-z0-9_.-]: no links, tags, mentions
    assert all(url.startswith(BASE + "/") for url in re.findall(r"\]\(([^)]*)\)", text))
    assert text.count("](") == len(re.findall(r"\]\(" + re.escape(BASE), text)) >= 1
    assert "<" not in text and "@" not in text and "\n\n" not in text


def test_plan_sends_while_there_is_room_and_merges_the_rest() -> None:
    due = [alert(i) for i in range(1, 8)]
    assert plan(due, 0) == [] and plan([], 5) == []
    assert plan(due, 10) == [[n] for n in due]
    assert plan(due, 7) == [[n] for n in due]
    assert plan(due, 3) == [[due[0]], [due[1]], due[2:]]
    assert plan(due, 1) == [due]


def test_backoff_doubles_to_a_cap_and_follows_what_the_far_end_asked() -> None:
    assert [backoff_ns(a) // 10**9 for a in (1, 2, 3, 4, 10, 50)] == [5, 10, 20, 40, 600, 600]
    assert backoff_ns(3, 60.0) == 60 * 10**9


def test_the_lifecycle_table() -> None:
    assert can_move("pending", "sending") and can_move("sending", "sent") and can_move("sending", "pending")
    assert not can_move("sent", "pending") and not can_move("failed", "sending") and not can_move("pending", "sent")
