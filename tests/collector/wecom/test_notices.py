"""Notices to employees through WeCom, end to end on a real collector app (SQLite) and the fake WeCom server:
sent, delivered (msgid), read receipt through a verified callback, acknowledged -> served on the case, the proof
reported to the payroll bridge; 42001, 45009, WeCom down, an invalid userid; email where there is no WeCom;
callbacks that do not verify are refused and audited."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from collector.cases.handoff import BridgeAnswer
from collector.notify.mail import SmtpMailer
from collector.settings import CollectorSettings
from collector.wecom.client import WeComClient
from collector.wecom.crypto import CallbackCrypto
from collector.wecom.runtime import WeComRuntime, build_wecom
from collector.wecom.service import NoticeWorker
from tests.collector.cases.conftest import World, world  # noqa: F401 (the fixture)
from tests.collector.cases.flow import ok, open_case
from tests.collector.notify.fakes import FakeSmtp, serve_smtp
from tests.collector.wecom.fake_wecom import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN, FakeWeCom

TEXT = "扣款通知书\n案件 C-1：根据《劳动合同法》第九十条 …… 每月扣款 1,600.00 元。\n如有异议，请于 15 日内书面提出。"


@dataclass
class Bridge:
    """The payroll bridge's proof-of-service endpoint, as far as the worker sees it: it takes what it is given."""

    status: int = 200
    proofs: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def serve_notice(self, case_id: str, notice_id: str, proof: Any) -> BridgeAnswer:
        self.proofs.append((case_id, notice_id, dict(proof)))
        return BridgeAnswer(self.status, {"served_on": (proof.get("acknowledged_at") or "")[:10]})


class Clock:
    def __init__(self) -> None:
        import time
        self.now = time.time_ns()

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


@dataclass
class NW:
    w: World
    fake: FakeWeCom
    smtp: FakeSmtp
    worker: NoticeWorker
    bridge: Bridge
    clock: Clock
    case_id: int

    def notice(self, **body: Any) -> dict[str, Any]:
        doc = {"kind": "deduction", "employee_id": "E-1001", "title": "扣款通知书", "text": TEXT,
               "case_id": self.case_id, "bridge_notice_id": f"N-SHOUMI-{self.case_id}-20261201", **body}
        return ok(self.w.api("hana", "POST", "/api/v1/wecom/notices", json=doc), 201)

    def get(self, key: str) -> Any:
        with self.w.store.read() as tx:
            return tx.get_employee_notice(key)

    def audit(self, action: str) -> list[Any]:
        from collector.audit.models import AuditFilter
        with self.w.store.read() as tx:
            return list(tx.list_audit(cursor=None, limit=100, filter=AuditFilter(action=action)).items)

    def callback(self, xml: str, **kw: Any) -> Any:
        query, body = self.fake.event_request(xml, **kw)
        return self.w.client.post(f"/wecom/callback?{query}", content=body, headers={"content-type": "text/xml"})


@pytest.fixture
def nw(world: World) -> Iterator[NW]:  # noqa: F811
    with FakeWeCom() as fake:
        smtp_gen = serve_smtp(FakeSmtp())
        smtp = next(smtp_gen)
        clock = Clock()
        client = WeComClient(CORP_ID, SECRET, base_url=fake.base_url, timeout_s=2)
        mailer = SmtpMailer(host="127.0.0.1", port=smtp.port, sender="hr@acme.test", recipients=["x@acme.test"],
                            base_url="http://collector.test", starttls=False, timeout_s=2)
        bridge = Bridge()
        worker = NoticeWorker(world.store, wecom=client, agent_id=AGENT_ID, base_url="http://collector.test",
                              mailer=mailer, mail_from="hr@acme.test", bridge=bridge, clock=clock)
        world.client.app.state.wecom = WeComRuntime(client, AGENT_ID, CallbackCrypto(TOKEN, AES_KEY, CORP_ID), worker)
        with world.store.transaction() as tx:
            world.people.create_user(tx=tx, username="emma", role="employee", password=None, actor="test")
            world.people.create_user(tx=tx, username="ella", role="employee", password=None, actor="test")
        ok(world.api("hana", "POST", "/api/v1/agreements/people",
                     json={"employee_id": "E-1001", "user_name": "alice", "account": "emma"}), 201)
        ok(world.api("hana", "POST", "/api/v1/agreements/people",
                     json={"employee_id": "E-2002", "user_name": "bella", "account": "ella"}), 201)
        ok(world.api("hana", "PUT", "/api/v1/wecom/userids/employee/E-1001", json={"userid": "zhangsan"}))
        yield NW(world, fake, smtp, worker, bridge, clock, open_case(world))
        client.close()
        smtp_gen.close()


def _ack(nw: NW, key: str, who: str = "emma") -> Any:
    csrf = nw.w.login(who)
    page = nw.w.client.get(f"/me/wecom-notices/{key}")
    sha = re.search(r'name="text_sha256" value="([0-9a-f]{64})"', page.text)
    assert sha, page.text[:500]
    return nw.w.client.post(f"/me/wecom-notices/{key}/acknowledge", data={"csrf_token": csrf, "text_sha256": sha[1]},
                            follow_redirects=False)


def test_sent_delivered_read_acknowledged_then_served_on_the_case_and_reported(nw: NW) -> None:
    made = nw.notice()
    assert made["state"] == "pending" and made["proof"]["channel"] == "wecom" and not made["served"]
    assert nw.worker.run_once() == 1
    n = nw.get(made["key"])
    assert n.state == "delivered" and n.msgid and n.delivered_at_ns == nw.clock.now
    (sent,) = nw.fake.sent
    assert sent["touser"] == "zhangsan" and sent["agentid"] == AGENT_ID and sent["msgtype"] == "textcard"
    assert sent["textcard"]["url"] == f"http://collector.test/me/wecom-notices/{made['key']}"
    # the read receipt: a verified callback naming the notice, from the addressee
    reply = nw.callback(FakeWeCom.card_event("zhangsan", made["key"]))
    assert reply.status_code == 200 and reply.text == "success"
    assert nw.get(made["key"]).read_at_ns is not None
    # not served before the employee acknowledges: nothing is reported to payroll
    nw.worker.run_once()
    assert nw.bridge.proofs == [] and not nw.get(made["key"]).served
    assert _ack(nw, made["key"]).status_code == 303
    n = nw.get(made["key"])
    assert n.state == "acknowledged" and n.served and n.acknowledged_by == "emma" and n.opened_at_ns is not None
    assert nw.w.client.get(f"/me/wecom-notices/{made['key']}").text.count('id="acknowledged"') == 1
    assert nw.worker.run_once() == 1
    ((case_id, notice_id, proof),) = nw.bridge.proofs
    assert (case_id, notice_id) == (str(nw.case_id), made["bridge_notice_id"])
    assert proof["channel"] == "wecom" and proof["msgid"] == n.msgid
    assert proof["delivered_at"] and proof["read_at"] and proof["acknowledged_at"].endswith("+08:00")
    assert nw.get(made["key"]).proof_reported_at_ns is not None and nw.worker.run_once() == 0
    # HR sees it on the case: served, with the times
    nw.w.client.cookies.clear()
    nw.w.login("hana")
    page = nw.w.client.get(f"/cases/{nw.case_id}")
    assert 'class="ok served"' in page.text and proof["acknowledged_at"] in page.text and n.msgid in page.text
    listed = ok(nw.w.api("aud", "GET", f"/api/v1/wecom/notices?case_id={nw.case_id}"))["notices"]
    assert [x["served"] for x in listed] == [True]
    assert [a.actor for a in nw.audit("wecom.notice.acknowledged")] == ["user:emma"]
    assert len(nw.audit("wecom.notice.delivered")) == 1 and len(nw.audit("wecom.notice.read")) == 1


def test_42001_renews_the_token_and_the_send_is_retried_once(nw: NW) -> None:
    nw.worker.wecom.token()  # type: ignore[union-attr]
    nw.fake.expire_next = 1
    made = nw.notice()
    nw.worker.run_once()
    assert nw.get(made["key"]).state == "delivered" and nw.fake.tokens_issued == 2


def test_45009_leaves_it_pending_and_the_outbox_sends_it_later(nw: NW) -> None:
    nw.fake.rate_limit_next = 1
    made = nw.notice()
    nw.worker.run_once()
    n = nw.get(made["key"])
    assert n.state == "pending" and "45009" in (n.last_error or "") and n.next_attempt_ns > nw.clock.now
    assert nw.worker.run_once() == 0  # not before the rate window
    nw.clock.advance(61)
    nw.worker.run_once()
    assert nw.get(made["key"]).state == "delivered" and nw.get(made["key"]).attempts == 2


def test_wecom_down_is_not_delivered_nothing_served_and_retried(nw: NW) -> None:
    nw.fake.down = True
    made = nw.notice()
    nw.worker.run_once()
    n = nw.get(made["key"])
    assert n.state == "pending" and n.delivered_at_ns is None and "unreachable" in (n.last_error or "")
    assert not n.served and nw.bridge.proofs == []
    listed = ok(nw.w.api("hana", "GET", f"/api/v1/wecom/notices?case_id={nw.case_id}"))["notices"]
    assert listed[0]["proof"]["delivered_at"] is None and not listed[0]["served"]
    nw.fake.down = False
    nw.clock.advance(61)
    nw.worker.run_once()
    assert nw.get(made["key"]).state == "delivered"


def test_an_invalid_userid_is_not_delivered_with_the_reason_and_can_be_sent_again(nw: NW) -> None:
    ok(nw.w.api("hana", "PUT", "/api/v1/wecom/userids/employee/E-1001", json={"userid": "left.company"}))
    made = nw.notice()
    nw.worker.run_once()
    n = nw.get(made["key"])
    assert n.state == "not_delivered" and "81013" in (n.last_error or "") and not n.served
    assert nw.w.api("hana", "POST", f"/api/v1/wecom/notices/{made['key']}/resend").status_code == 200
    assert nw.get(made["key"]).state == "pending"  # the userid is still wrong: not delivered again
    ok(nw.w.api("hana", "PUT", "/api/v1/wecom/userids/employee/E-1001", json={"userid": "zhangsan"}))
    nw.worker.run_once()
    assert nw.w.api("hana", "POST", f"/api/v1/wecom/notices/{made['key']}/resend").status_code == 200
    nw.worker.run_once()
    assert nw.get(made["key"]).state == "delivered" and nw.get(made["key"]).address == "zhangsan"


def test_an_employee_without_wecom_gets_email(nw: NW) -> None:
    without = nw.w.api("hana", "POST", "/api/v1/wecom/notices", json={
        "kind": "monitoring", "employee_id": "E-2002", "title": "员工监控告知书", "text": "告知书全文"})
    assert without.status_code == 422 and "email" in without.json()["detail"]
    made = nw.notice(employee_id="E-2002", email="bella@acme.test", kind="monitoring", case_id=None,
                     bridge_notice_id=None)
    assert made["proof"]["channel"] == "email"
    nw.worker.run_once()
    (msg,) = nw.smtp.messages
    assert msg["To"] == "bella@acme.test" and f"/me/wecom-notices/{made['key']}" in msg.get_content()
    assert nw.get(made["key"]).state == "delivered" and nw.fake.sent == []
    assert _ack(nw, made["key"], who="ella").status_code == 303 and nw.get(made["key"]).served


def test_only_the_addressee_opens_a_notice(nw: NW) -> None:
    made = nw.notice()
    nw.worker.run_once()
    nw.w.login("ella")
    assert nw.w.client.get(f"/me/wecom-notices/{made['key']}").status_code == 404
    assert nw.get(made["key"]).opened_at_ns is None


@pytest.mark.parametrize("tamper", ["signature", "corp", "padding"])
def test_a_callback_that_does_not_verify_is_refused_and_audited(nw: NW, tamper: str) -> None:
    made = nw.notice()
    nw.worker.run_once()
    reply = nw.callback(FakeWeCom.card_event("zhangsan", made["key"]), tamper=tamper)
    assert reply.status_code == 400 and "refused" in reply.json()["detail"]
    assert nw.get(made["key"]).read_at_ns is None
    (refused,) = nw.audit("wecom.callback.refused")
    assert refused.details["reason"] and refused.actor == "anonymous"
    assert AES_KEY not in str(refused.details) and TOKEN not in str(refused.details)


def test_a_replayed_or_foreign_callback_records_nothing(nw: NW) -> None:
    made = nw.notice()
    nw.worker.run_once()
    old = nw.callback(FakeWeCom.card_event("zhangsan", made["key"]), timestamp=1_600_000_000)
    assert old.status_code == 400
    other = nw.callback(FakeWeCom.card_event("lisi", made["key"]))  # verified, but not from the addressee
    assert other.status_code == 200 and nw.get(made["key"]).read_at_ns is None
    assert nw.w.client.post("/wecom/callback?msg_signature=x&timestamp=1&nonce=n",
                            content=b'<!DOCTYPE x [<!ENTITY a "b">]><xml/>').status_code == 400


def test_the_callback_url_check_answers_the_echo(nw: NW) -> None:
    crypto = CallbackCrypto(TOKEN, AES_KEY, CORP_ID)
    from urllib.parse import urlencode

    from collector.wecom.crypto import signature
    import time
    ts, echostr = str(int(time.time())), crypto.encrypt("echo-1234")
    q = urlencode({"msg_signature": signature(TOKEN, ts, "n1", echostr), "timestamp": ts, "nonce": "n1",
                   "echostr": echostr})
    assert nw.w.client.get(f"/wecom/callback?{q}").text == "echo-1234"
    assert nw.w.client.get(f"/wecom/callback?{q.replace('n1', 'n2')}").status_code == 400


def test_a_wrong_corp_id_at_start_leaves_wecom_off_with_the_reason_and_no_secret(
        fake_wecom: FakeWeCom, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from collector.storage.memory import MemoryStore
    caplog.set_level(logging.DEBUG)
    settings = CollectorSettings(data_dir=tmp_path, wecom={"corp_id": "wwwrong", "agent_id": AGENT_ID,
                                                           "secret": SECRET, "base_url": fake_wecom.base_url})
    rt = build_wecom(settings, MemoryStore())
    assert not rt.enabled and rt.problem and "40013" in rt.problem and "invalid corpid" in rt.problem
    assert SECRET not in caplog.text and SECRET not in repr(settings) and SECRET not in rt.problem
    good = build_wecom(CollectorSettings(data_dir=tmp_path, wecom={
        "corp_id": CORP_ID, "agent_id": AGENT_ID, "secret": SECRET, "base_url": fake_wecom.base_url}), MemoryStore())
    assert good.enabled and good.problem is None
    with pytest.raises(ValueError, match="secret"):
        CollectorSettings(data_dir=tmp_path, wecom={"corp_id": CORP_ID, "agent_id": AGENT_ID})


def test_hr_sends_a_notice_and_links_a_userid_from_the_page(nw: NW) -> None:
    csrf = nw.w.login("hana")
    page = nw.w.client.get("/wecom/notices")
    assert page.status_code == 200 and 'action="/wecom/notices"' in page.text
    linked = nw.w.client.post("/wecom/userids", data={"csrf_token": csrf, "employee_id": "E-2002", "userid": "lisi"},
                              follow_redirects=False)
    assert linked.status_code == 303
    sent = nw.w.client.post("/wecom/notices", data={
        "csrf_token": csrf, "kind": "deduction", "employee_id": "E-2002", "case_id": str(nw.case_id),
        "bridge_notice_id": "N-SHOUMI-1-20261201", "title": "扣款通知书", "text": TEXT}, follow_redirects=False)
    assert sent.status_code == 303 and sent.headers["location"] == f"/wecom/notices?case_id={nw.case_id}"
    bad = nw.w.client.post("/wecom/notices", data={"csrf_token": csrf, "kind": "deduction", "employee_id": "E-2002",
                                                   "title": "扣款通知书", "text": TEXT})
    assert bad.status_code == 422 and "N-..." in bad.text  # a deduction notice names its case and notice id
    nw.worker.run_once()
    assert [m["touser"] for m in nw.fake.sent] == ["lisi"]
    assert "已送达，未确认" in nw.w.client.get(f"/wecom/notices?case_id={nw.case_id}").text
    nw.w.client.cookies.clear()
    nw.w.login("emma")
    assert nw.w.client.get("/wecom/notices").status_code == 403


def test_wecom_down_at_start_leaves_it_off_and_notices_wait_with_the_reason(
        fake_wecom: FakeWeCom, tmp_path: Path) -> None:
    from collector.storage.memory import MemoryStore
    from collector.wecom import service as svc
    fake_wecom.down = True
    store = MemoryStore()
    rt = build_wecom(CollectorSettings(data_dir=tmp_path, wecom={
        "corp_id": CORP_ID, "agent_id": AGENT_ID, "secret": SECRET, "base_url": fake_wecom.base_url}), store)
    assert not rt.enabled and "unavailable" in (rt.problem or "")
    with store.transaction() as tx:
        tx.put_wecom_userid(subject="employee:E-1", userid="zhangsan", actor="t", now_ns=1)
        made = svc.create_notice(tx=tx, kind="monitoring", employee_id="E-1", title="告知书", text="全文", actor="hana",
                                 now_ns=1, email="e1@acme.test", wecom_enabled=rt.enabled)
    assert made.channel == "email"  # WeCom is off: the email given is used
    with store.transaction() as tx:
        queued = svc.create_notice(tx=tx, kind="monitoring", employee_id="E-1", title="告知书", text="全文",
                                   actor="hana", now_ns=2, wecom_enabled=True)
    rt.worker.mailer = None
    rt.worker.run_once()
    with store.read() as tx:
        n = tx.get_employee_notice(queued.key)
    assert n.state == "pending" and "unavailable" in (n.last_error or "") and not n.served
