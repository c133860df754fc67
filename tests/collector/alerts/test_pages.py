"""The alert pages in a signed-in browser session: the queue (Chinese by default, English on request), its
filters, pages, grouping, saved filters and bulk forms (a filter-wide action shows its count before it runs);
an alert's detail with its timeline, health, triage, escalate and reveal forms. No inline script or style."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.collector.alerts.conftest import T0, World, csrf

EVIDENCE = ("ev-43", "ev-42", "ev-41", "ev-40")


def _no_inline_code(html: str) -> None:
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert not re.search(r"\sstyle=", html) and not re.search(r"\son[a-z]+=", html), "inline style or handler"


def _forms_carry_csrf(html: str) -> None:
    for form in re.findall(r'<form method="post".*?</form>', html, flags=re.S):
        assert 'name="csrf_token"' in form, form[:200]


def test_the_queue_in_chinese_and_english_with_pseudonyms_only(world: World) -> None:
    world.alert(rule="usb_exfiltration", user="alice", summary="alice wrote 2 file(s) to /dev/sdb1")
    world.alert(rule="read_burst", user="bob", severity="low")
    zh = world.sign_in("ana").get("/alerts")
    assert zh.status_code == 200 and '<html lang="zh-CN">' in zh.text
    for text in ("告警队列", "敏感内容写入移动存储", "短时大量读取", "待处理", "高", "批量操作", world.code("alice")):
        assert text in zh.text, text
    assert "alice" not in zh.text and "bob" not in zh.text
    _no_inline_code(zh.text)
    _forms_carry_csrf(zh.text)
    en = world.sign_in("ana", lang="en").get("/alerts")
    for text in ("Alert queue", "Sensitive content to removable media", "Burst of reads", "Bulk action"):
        assert text in en.text, text


def test_filters_counts_and_pages_reach_every_alert(world: World) -> None:
    real = world.alert(rule="usb_exfiltration", user="alice", at=T0)
    for i in range(60):
        world.alert(rule="first_access", user="bob", severity="medium", at=T0 + i + 1)
    browser = world.sign_in("ana")
    page = browser.get("/alerts")
    assert page.text.count('<tr data-alert-id=') == 50
    assert "<strong>61</strong>" in page.text  # how many match, said before paging
    nxt = re.search(r'<a href="([^"]+)" rel="next">', page.text)
    assert nxt, "a next page link"
    second = browser.get(nxt.group(1).replace("&amp;", "&"))
    assert second.text.count('<tr data-alert-id=') == 11 and f'data-alert-id="{real.id}"' in second.text
    assert 'rel="next"' not in second.text
    only = browser.get("/alerts", params={"rule": "usb_exfiltration"})
    assert only.text.count('<tr data-alert-id=') == 1
    mine = browser.get("/alerts", params={"user": world.code("alice")})
    assert f'data-alert-id="{real.id}"' in mine.text and mine.text.count('<tr data-alert-id=') == 1
    bad = browser.get("/alerts", params={"since": "not a time"})
    assert bad.status_code == 400 and "未执行" in bad.text


def test_grouping_by_person_links_to_their_queue(world: World) -> None:
    for _ in range(3):
        world.alert(user="alice", rule="first_access")
    world.alert(user="bob", rule="first_access")
    page = world.sign_in("ana").get("/alerts", params={"group": "user"})
    assert page.status_code == 200
    assert f'href="/alerts?user={world.code("alice")}"' in page.text and "alice" not in page.text
    rows = re.findall(r'<td class="who">([^<]+)</td><td>(\d+)</td>', page.text)
    assert rows == [(world.code("alice"), "3"), (world.code("bob"), "1")]


def test_saving_and_deleting_a_filter_through_the_forms(world: World) -> None:
    browser = world.sign_in("ana")
    token = csrf(browser, "/alerts")
    saved = browser.post("/alerts/filters", data={"csrf_token": token, "name": "USB open",
                                                   "filter": "status=open&rule=usb_exfiltration"},
                         follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == "/alerts?rule=usb_exfiltration&status=open"
    page = browser.get("/alerts")
    assert "USB open" in page.text
    [filter_id] = re.findall(r'action="/alerts/filters/(\d+)/delete"', page.text)
    assert browser.post(f"/alerts/filters/{filter_id}/delete", data={"csrf_token": token},
                        follow_redirects=False).status_code == 303
    assert "USB open" not in browser.get("/alerts").text
    assert browser.post("/alerts/filters", data={"name": "no token", "filter": ""}).status_code == 403  # CSRF


def test_bulk_close_of_the_ticked_alerts_and_of_a_filter_after_its_count(world: World) -> None:
    picked = [world.alert(rule="first_access", user="etl-bot") for _ in range(3)]
    kept = world.alert(rule="usb_exfiltration", user="alice")
    browser = world.sign_in("ana")
    token = csrf(browser, "/alerts")
    base = {"csrf_token": token, "scope": "selected", "action": "close", "filter": ""}
    missing = browser.post("/alerts/bulk", data={**base, "ids": [str(picked[0].id)]})
    assert missing.status_code == 422 and "closure reason" in missing.text
    done = browser.post("/alerts/bulk", data={**base, "outcome": "benign", "ids": [str(picked[0].id)]},
                        follow_redirects=False)
    assert done.status_code == 303 and "changed=1" in done.headers["location"]
    flt = f"rule=first_access&status=open&user={world.code('etl-bot')}"
    confirm = browser.post("/alerts/bulk", data={**base, "scope": "filter", "filter": flt,
                                                 "outcome": "false_positive", "suppress": "yes", "days": "30",
                                                 "suppress_reason": "the ETL robot"})
    assert confirm.status_code == 200 and "<strong>2</strong>" in confirm.text  # the count, before it runs
    _forms_carry_csrf(confirm.text)
    assert world.get("ana", f"/api/v1/alerts/{picked[1].id}").json()["status"] == "open"  # nothing yet
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', confirm.text))
    ran = browser.post("/alerts/bulk", data={k: v.replace("&amp;", "&") for k, v in fields.items()},
                       follow_redirects=False)
    assert ran.status_code == 303 and "changed=2" in ran.headers["location"] and "suppressed=1" in ran.headers["location"]
    assert {world.get("ana", f"/api/v1/alerts/{a.id}").json()["status"] for a in picked} == {"closed"}
    assert world.get("ana", f"/api/v1/alerts/{kept.id}").json()["status"] == "open"
    assert len(world.get("ana", "/api/v1/suppressions").json()["items"]) == 1


def test_the_detail_page_shows_the_timeline_and_the_agent_and_offers_what_to_do(world: World) -> None:
    a = world.alert(rule="usb_exfiltration", event_ids=EVIDENCE, summary="alice wrote 2 file(s) to /dev/sdb1")
    page = world.sign_in("ana").get(f"/alerts/{a.id}")
    assert page.status_code == 200
    html = page.text
    for text in ("证据时间线", "内容去向", "/srv/finance/plan.xlsx", "/dev/sdb1", "源文件占比 87 %", "副本占比 61 %",
                 "压缩包内", "plan.xlsx", "该时段内的终端状况", "采集缺口", "(630 s)", "升级为案件", "查看真实姓名",
                 f"{world.code('alice')} wrote 2 file(s)"):
        assert text in html, text
    assert "alice" not in html
    assert html.index("/media/" + world.code("alice") + "/KINGSTON/a.txt") < html.index("q3.xlsx")  # time order
    escalate = re.search(r'<form method="post" action="/cases".*?</form>', html, flags=re.S)
    assert escalate and f'name="alert_ids" value="{a.id}"' in escalate.group(0) and 'name="title"' in escalate.group(0)
    _no_inline_code(html)
    _forms_carry_csrf(html)


def test_triage_and_reveal_through_the_detail_forms(world: World) -> None:
    a = world.alert(rule="read_burst", user="etl-bot")
    browser = world.sign_in("ana")
    token = csrf(browser, f"/alerts/{a.id}")
    url = f"/alerts/{a.id}"
    assert browser.post(f"{url}/status", data={"csrf_token": token, "status": "acknowledged"},
                        follow_redirects=False).status_code == 303
    assert browser.post(f"{url}/assign", data={"csrf_token": token, "assignee": "me"},
                        follow_redirects=False).status_code == 303
    no_reason = browser.post(f"{url}/status", data={"csrf_token": token, "status": "closed"})
    assert no_reason.status_code == 422
    closed = browser.post(f"{url}/status", data={"csrf_token": token, "status": "closed", "outcome": "false_positive",
                                                 "suppress": "yes", "days": "7", "suppress_reason": "export job",
                                                 "path": "/srv/exports/*"}, follow_redirects=False)
    assert closed.status_code == 303
    state = world.get("ana", f"/api/v1/alerts/{a.id}").json()
    assert (state["status"], state["outcome"], state["assignee"]) == ("closed", "false_positive", "ana")
    [s] = world.get("ana", "/api/v1/suppressions").json()["items"]
    assert (s["rule"], s["user"], s["path"], s["owner"]) == ("read_burst", world.code("etl-bot"), "/srv/exports/*", "ana")
    short = browser.post(f"{url}/reveal", data={"csrf_token": token, "reason": "why not"})
    assert short.status_code == 422 and "etl-bot" not in short.text
    shown = browser.post(f"{url}/reveal", data={"csrf_token": token, "reason": "checking the export job owner"})
    assert shown.status_code == 200 and '<strong class="revealed">etl-bot</strong>' in shown.text
    assert [e.details["reason"] for e in world.audit() if e.action == "identity.reveal"] == ["checking the export job owner"]


def test_an_auditor_reads_the_pages_and_changes_nothing(world: World) -> None:
    a = world.alert(rule="usb_exfiltration", event_ids=EVIDENCE)
    browser: TestClient = world.sign_in("aud")
    queue, detail = browser.get("/alerts"), browser.get(f"/alerts/{a.id}")
    assert queue.status_code == detail.status_code == 200
    assert "批量操作" not in queue.text and 'action="/cases"' not in detail.text and "/reveal" not in detail.text
    token = csrf(browser, "/alerts")
    assert browser.post(f"/alerts/{a.id}/status", data={"csrf_token": token, "status": "acknowledged"}).status_code == 403
    assert browser.post("/alerts/bulk", data={"csrf_token": token, "ids": [str(a.id)], "action": "acknowledge"}).status_code == 403
    assert world.sign_in("ivan").get("/alerts").status_code == 403
    assert TestClient(world.client.app).get("/alerts", follow_redirects=False).headers["location"] == "/login?next=/alerts"


def test_a_form_with_a_control_character_is_refused_with_a_page(world: World) -> None:
    a = world.alert()
    browser = world.sign_in("ana")
    token = csrf(browser, f"/alerts/{a.id}")
    answer = browser.post(f"/alerts/{a.id}/status", data={"csrf_token": token, "status": "closed",
                                                          "outcome": "false_positive", "suppress": "yes",
                                                          "suppress_reason": "nul\x00here"})
    assert answer.status_code == 422 and "未执行" in answer.text
    assert world.get("ana", f"/api/v1/alerts/{a.id}").json()["status"] == "open"


def test_the_detail_and_the_confirmation_in_english(world: World) -> None:
    a = world.alert(rule="usb_exfiltration", event_ids=EVIDENCE)
    browser = world.sign_in("ana", lang="en")
    detail = browser.get(f"/alerts/{a.id}")
    for text in ("Evidence timeline", "Where the content went", "share of the source 87 %", "The agent in that window",
                 "Escalate to case", "Reporting", "Sensitive content to removable media"):
        assert text in detail.text, text
    confirm = browser.post("/alerts/bulk", data={"csrf_token": csrf(browser, "/alerts"), "scope": "filter",
                                                 "filter": "rule=usb_exfiltration", "action": "acknowledge"})
    assert confirm.status_code == 200 and "alerts match the filter and would change." in confirm.text
