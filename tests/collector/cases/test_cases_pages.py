"""The cases pages: Chinese by default, forms that post and come back (303), refusals shown on the form."""

from __future__ import annotations

import re
from pathlib import Path

from tests.collector.cases.conftest import World
from tests.collector.cases.flow import confirm_security, hr_records, ok, open_case, step

TEMPLATES = Path(__file__).resolve().parents[3] / "collector" / "cases" / "templates"


def _post(w: World, who: str, url: str, data: dict[str, object], **kw: object) -> object:
    token = w.login(who)
    return w.client.post(url, data={"csrf_token": token, **data}, follow_redirects=False, **kw)  # type: ignore[arg-type]


def test_escalate_form_opens_a_case_and_redirects_to_it(world: World) -> None:
    reply = _post(world, "ana", "/cases", {"alert_ids": [str(a) for a in world.alerts[:2]], "title": "外传 <b>图纸</b>"})
    assert reply.status_code == 303  # type: ignore[attr-defined]
    where = reply.headers["location"]  # type: ignore[attr-defined]
    assert re.fullmatch(r"/cases/\d+", where)
    page = world.client.get(where)
    assert page.status_code == 200 and "案件" in page.text and "新建" in page.text
    assert "外传 &lt;b&gt;图纸&lt;/b&gt;" in page.text and "<b>图纸" not in page.text
    for a in world.alerts[:2]:
        assert f'href="/alerts/{a}"' in page.text
    assert "alice" not in page.text and "P-" in page.text
    bad = _post(world, "ana", "/cases", {"alert_ids": ["999999", "x'; DROP TABLE cases;--"], "title": "t"})
    assert bad.status_code == 422 and "DROP TABLE" in bad.text and "未保存任何内容" in bad.text  # type: ignore[attr-defined]
    busy = _post(world, "sam", "/cases", {"alert_ids": [str(world.alerts[0])], "title": "again"})
    assert busy.status_code == 409 and "already in an open case" in busy.text  # type: ignore[attr-defined]
    with world.store.read() as tx:
        assert len(tx.list_cases(cursor=None, limit=10).items) == 1
    no_csrf = world.client.post("/cases", data={"alert_ids": [str(world.alerts[2])], "title": "t"},
                                follow_redirects=False)
    assert no_csrf.status_code == 403


def test_case_page_shows_steps_by_role_and_forms_come_back(world: World) -> None:
    cid = open_case(world)
    world.login("ana")
    page = world.client.get(f"/cases/{cid}")
    assert 'data-step="under_review"' in page.text and 'data-step="dismissed"' in page.text
    world.login("hana")
    assert 'data-step=' not in world.client.get(f"/cases/{cid}").text  # no HR step from open
    world.login("aud")
    aud = world.client.get(f"/cases/{cid}")
    assert aud.status_code == 200 and "data-step=" not in aud.text and 'name="body"' not in aud.text
    # a refused step shows the reason on the page and changes nothing
    refused = _post(world, "ana", f"/cases/{cid}/transition", {"to": "dismissed", "reason": ""})
    assert refused.status_code == 422 and "needs a reason" in refused.text  # type: ignore[attr-defined]
    moved = _post(world, "ana", f"/cases/{cid}/transition", {"to": "under_review"})
    assert moved.status_code == 303 and moved.headers["location"] == f"/cases/{cid}"  # type: ignore[attr-defined]
    skipped = _post(world, "hana", f"/cases/{cid}/transition", {"to": "hr_confirmed", "back": "hr"})
    assert skipped.status_code == 409 and "审查中" in skipped.text  # type: ignore[attr-defined]
    said = _post(world, "hana", f"/cases/{cid}/comments", {"body": "<img src=x onerror=alert(1)>"})
    assert said.status_code == 303  # type: ignore[attr-defined]
    shown = world.client.get(f"/cases/{cid}").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown and "<img src=x" not in shown
    empty = _post(world, "hana", f"/cases/{cid}/comments", {"body": "   "})
    assert empty.status_code == 422  # type: ignore[attr-defined]
    up = _post(world, "ana", f"/cases/{cid}/attachments", {}, files={"file": ("../../x.pdf", b"abc", "a/b")})
    assert up.status_code == 303  # type: ignore[attr-defined]
    assert "x.pdf" in world.client.get(f"/cases/{cid}").text
    with world.store.read() as tx:
        assert [h.action for h in tx.case_history(cid)] == ["open", "transition", "comment", "attach"]


def test_hr_page_states_the_law_records_and_confirms(world: World) -> None:
    cid = open_case(world)
    confirm_security(world, cid)
    world.login("hana")
    page = world.client.get(f"/cases/{cid}/hr")
    assert page.status_code == 200
    for words in ("第九十条", "绝不是罚款", "第二十五条", "20%", "最低工资", "第十六条", "never a fine", "§90", "§25",
                  "minimum wage", "SHOUMI_PAYROLL_APPEAL_DAYS", 'value="15"'):
        assert words in page.text, words
    for bad, reason in (("0", "more than 0"), ("-1", "more than 0"), ("1.005", "two decimals"), ("abc", "yuan")):
        r = _post(world, "hana", f"/cases/{cid}/hr/loss", {"amount_yuan": bad})
        assert r.status_code == 422 and reason in r.text, bad  # type: ignore[attr-defined]
        assert f'value="{bad}"' in r.text  # what was typed is kept on the form  # type: ignore[attr-defined]
    assert ok(world.api("hana", "GET", f"/api/v1/cases/{cid}/hr")) == []
    hr_records(world, cid)
    page = world.client.get(f"/cases/{cid}/hr")
    assert "5,000.00" in page.text and "人事确认所需材料均已记录" in page.text and 'data-step="hr_confirmed"' in page.text
    done = _post(world, "hana", f"/cases/{cid}/transition", {"to": "hr_confirmed", "back": "hr"})
    assert done.status_code == 303 and done.headers["location"] == f"/cases/{cid}/hr"  # type: ignore[attr-defined]
    sent = _post(world, "hugo", f"/cases/{cid}/transition", {"to": "sent_to_payroll", "back": "hr"})
    assert sent.status_code == 303  # type: ignore[attr-defined]
    case_page = world.client.get(f"/cases/{cid}").text
    assert "移交工资系统" in case_page and "等待发送至工资桥" in case_page


def test_reveal_on_the_case_asks_why_and_is_audited(world: World) -> None:
    cid = open_case(world)
    short = _post(world, "hana", f"/cases/{cid}/reveal", {"reason": "why"})
    assert short.status_code == 422 and "alice" not in short.text  # type: ignore[attr-defined]
    shown = _post(world, "hana", f"/cases/{cid}/reveal", {"reason": "核对工资系统中的员工身份 for payroll", "back": "hr"})
    assert shown.status_code == 200 and "<strong>alice</strong>" in shown.text  # type: ignore[attr-defined]
    assert "alice" not in world.client.get(f"/cases/{cid}/hr").text
    assert _post(world, "aud", f"/cases/{cid}/reveal", {"reason": "just looking around"}).status_code == 403  # type: ignore[attr-defined]
    with world.store.read() as tx:
        reveals = [e for e in tx.list_audit(cursor=None, limit=100).items if e.action == "identity.reveal"]
    assert [e.actor for e in reveals] == ["hana"] and "alice" not in str(reveals[0].details)


def test_list_page_filters_and_pages_need_a_session(world: World) -> None:
    a = open_case(world, alerts=[world.alerts[0]])
    b = open_case(world, alerts=[world.alerts[1]], title="把客户名单拷到U盘")
    ok(step(world, "ana", b, "under_review"))
    assert world.client.get("/cases", follow_redirects=False).status_code == 303
    world.login("hana")
    listed = world.client.get("/cases").text
    assert f'data-case-id="{a}"' in listed and f'data-case-id="{b}"' in listed
    only = world.client.get("/cases", params={"state": "under_review"}).text
    assert f'data-case-id="{b}"' in only and f'data-case-id="{a}"' not in only
    world.login("ivan")
    assert world.client.get("/cases").status_code == 403


def test_templates_have_no_inline_script_or_style() -> None:
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert not re.search(r"\son[a-z]+=", text) and "style=" not in text, path
        assert not re.search(r"<script(?![^>]*\ssrc=\"/static/)", text), path  # scripts only from /static
