"""The hand-off against a REAL payroll bridge (its FastAPI intake under uvicorn on loopback, its ledger,
its CLI for the credential): delivered once, refused and corrected, retried while the bridge is down,
and never sent twice by a restarted worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn

from collector.cases.handoff import HandoffWorker, PayrollClient, read_token
from payroll_bridge.api import create_app as bridge_app
from payroll_bridge.ledger import Ledger
from payroll_bridge.minimum_wage import load_table
from payroll_bridge.settings import PayrollSettings
from tests.collector.cases.conftest import World, add_alerts
from tests.collector.cases.flow import ok, step, to_hr_confirmed, hr_records, confirm_security, open_case


class Bridge:
    """The payroll bridge's intake on one loopback port; it can be stopped and started again on that port."""

    def __init__(self, ledger: Path) -> None:
        self.settings = PayrollSettings(ledger_path=ledger)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.sock = sock
        self.server = uvicorn.Server(uvicorn.Config(bridge_app(self.settings), log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def ledger(self) -> Ledger:
        return Ledger(self.settings.resolved_ledger_path(), table=load_table())


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    exe = Path(sys.executable).with_name("shoumi-payroll")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "payroll_bridge"]
    out = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=60, input=stdin)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[tuple[Bridge, Path, dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUMI_PAYROLL_")}
    env.update(SHOUMI_PAYROLL_LEDGER_PATH=str(tmp_path / "ledger.sqlite3"), XDG_STATE_HOME=str(tmp_path / "state"))
    made = _cli(env, "client", "create", "collector", "--actor", "it.admin")
    token_file = tmp_path / "payroll.token"
    token_file.write_text(made["token"] + "\n")
    token_file.chmod(0o600)
    b = Bridge(tmp_path / "ledger.sqlite3")
    b.start()
    yield b, token_file, env
    if b.server is not None and not b.server.should_exit:
        b.stop()


@pytest.fixture
def clients() -> Iterator[Any]:
    """Makes bridge clients and closes them all at the end."""
    made: list[PayrollClient] = []

    def make(*args: Any, **kw: Any) -> PayrollClient:
        made.append(PayrollClient(*args, **kw))
        return made[-1]

    yield make
    for c in made:
        c.close()


class Clock:
    """The real time, moved forward by the test (a back-off or a lease runs out at once)."""

    def __init__(self) -> None:
        self.ahead = 0

    def __call__(self) -> int:
        return time.time_ns() + self.ahead

    def advance(self, ns: int) -> None:
        self.ahead += ns


def _handoffs(w: World, case_id: int) -> list[dict[str, Any]]:
    return list(ok(w.api("aud", "GET", f"/api/v1/cases/{case_id}/handoff")))


def _accepted_intakes(b: Bridge, case_id: str) -> list[dict[str, Any]]:
    with b.ledger() as ledger:
        return [i for i in ledger.intakes() if i["case_id"] == case_id and i["decision"] == "accepted"]


def test_a_confirmed_case_reaches_the_bridge_once_and_its_schedule_comes_back(
        world: World, bridge: tuple[Bridge, Path, dict[str, str]], clients: Any) -> None:
    b, token_file, env = bridge
    clock = Clock()
    worker = HandoffWorker(world.store, clients(b.url, read_token(token_file)), backoff_s=1, clock=clock)
    assert worker.run_once() == 0  # nothing in the outbox yet
    cid = to_hr_confirmed(world)
    ok(step(world, "hugo", cid, "sent_to_payroll"))
    assert worker.run_once() == 1
    (h,) = _handoffs(world, cid)
    assert h["state"] == "accepted" and h["status"].startswith("filed") and not h["duplicate"]
    assert h["remaining_fen"] == 500000 and h["schedule"] == []  # the bridge has no wages yet
    with b.ledger() as ledger:
        case = ledger.case(f"SC-{cid}")
        assert case.loss_fen == 500000 and case.payload["confirmations"]["security"]["by"] == "ana"
        assert case.payload["handoff"] == {"key": f"{cid}/1", "number": 1, "collector_case_id": cid,
                                           "sent_by": "hugo", "sent_at": case.payload["handoff"]["sent_at"]}
        assert [e.actor for e in ledger.audit_log() if e.action == "intake.accepted"] == ["client:collector"]
    # payroll records the wages: the schedule, read again, has its months, amounts and binding limits
    month = time.strftime("%Y-%m", time.gmtime(clock() / 1e9))
    y, m = map(int, month.split("-"))
    periods = [f"{y + (m - 1 + i) // 12}-{(m - 1 + i) % 12 + 1:02d}" for i in range(4)]
    wages = {"employee_id": "E1001", "periods": [{"period": p, "wage_fen": 800000, "social_insurance_fen": 84000,
                                                  "housing_fund_fen": 56000} for p in periods]}
    (Path(env["SHOUMI_PAYROLL_LEDGER_PATH"]).parent / "wages.json").write_text(json.dumps(wages))
    _cli(env, "wages", str(Path(env["SHOUMI_PAYROLL_LEDGER_PATH"]).parent / "wages.json"), "--actor", "payroll.clerk")
    ok(world.api("hana", "POST", f"/api/v1/cases/{cid}/handoff/refresh"))
    assert worker.run_once() == 1
    (h,) = _handoffs(world, cid)
    lines = [(x["period"], x["deduction_fen"], x["binding"]) for x in h["schedule"]]
    assert lines == [(periods[0], 160000, "CAP20"), (periods[1], 160000, "CAP20"), (periods[2], 160000, "CAP20"),
                     (periods[3], 20000, "BALANCE")]
    world.login("aud")
    page = world.client.get(f"/cases/{cid}")
    assert page.status_code == 200 and "1,600.00" in page.text and "CAP20" in page.text
    # later passes, and a restarted worker, send nothing again
    clock.advance(10**12)
    again = HandoffWorker(world.store, clients(b.url, read_token(token_file)), clock=clock)
    again.run_once()
    assert len(_accepted_intakes(b, f"SC-{cid}")) == 1


def test_a_refused_hand_off_is_corrected_and_sent_again_under_a_new_number(
        world: World, bridge: tuple[Bridge, Path, dict[str, str]], clients: Any) -> None:
    b, token_file, _ = bridge
    worker = HandoffWorker(world.store, clients(b.url, read_token(token_file)))
    first = to_hr_confirmed(world, alerts=[world.alerts[0]])
    ok(step(world, "hugo", first, "sent_to_payroll"))
    # the second case reuses the first case's loss document: the bridge refuses (劳动合同法 §90: one loss, once)
    second = open_case(world, alerts=[world.alerts[1]], title="把客户名单拷到U盘")
    ok(world.api("ana", "POST", f"/api/v1/cases/{second}/assign", json={"assignee": "ana"}))
    confirm_security(world, second)
    hr_records(world, second, doc=f"third-party assessment of case {first}".encode())
    ok(step(world, "hana", second, "hr_confirmed"))
    ok(step(world, "hugo", second, "sent_to_payroll"))
    assert worker.run_once() == 2
    (h,) = _handoffs(world, second)
    assert h["state"] == "refused" and [r["code"] for r in h["refusals"]] == ["LOSS_DOCUMENTS_ALREADY_CLAIMED"]
    assert worker.run_once() == 0  # a refusal is final for that hand-off: never resent by itself
    # HR attaches the right document, records the loss again and sends hand-off 2
    att = ok(world.api("hana", "POST", f"/api/v1/cases/{second}/attachments",
                       files={"file": ("返工费用发票.pdf", b"invoice for rework", "application/pdf")}), 201)
    ok(world.api("hana", "POST", f"/api/v1/cases/{second}/hr/loss",
                 json={"amount_yuan": "3000", "documents": [att["id"]]}), 201)
    made = ok(world.api("hana", "POST", f"/api/v1/cases/{second}/handoff/resend"), 201)
    assert (made["number"], made["key"]) == (2, f"{second}/2")
    assert world.api("hana", "POST", f"/api/v1/cases/{second}/handoff/resend").status_code == 409  # one at a time
    assert worker.run_once() == 1
    hs = _handoffs(world, second)
    assert [(x["number"], x["state"]) for x in hs] == [(1, "refused"), (2, "accepted")]
    with b.ledger() as ledger:
        assert ledger.case(f"SC-{second}").loss_fen == 300000
        assert ledger.case(f"SC-{second}").payload["handoff"]["number"] == 2
    # while accepted, HR's records are locked
    assert world.api("hana", "POST", f"/api/v1/cases/{second}/hr/loss",
                     json={"amount_yuan": "1", "documents": [att["id"]]}).status_code == 409


def test_a_bridge_that_is_down_is_retried_with_backoff_and_a_restart_sends_nothing_twice(
        world: World, bridge: tuple[Bridge, Path, dict[str, str]], clients: Any) -> None:
    b, token_file, _ = bridge
    clock = Clock()
    token = read_token(token_file)
    worker = HandoffWorker(world.store, clients(b.url, token, timeout_s=2), backoff_s=5, clock=clock)
    b.stop()
    cid = to_hr_confirmed(world)
    ok(step(world, "hugo", cid, "sent_to_payroll"))
    assert worker.run_once() == 1
    (h,) = _handoffs(world, cid)
    assert h["state"] == "pending" and h["attempts"] == 1 and h["next_attempt_at"]
    assert h["status"].startswith("payroll bridge unreachable, retrying (attempt 1, next at ")
    assert worker.run_once() == 0  # backing off
    clock.advance(5 * 10**9)
    assert worker.run_once() == 1
    (h,) = _handoffs(world, cid)
    assert h["attempts"] == 2 and "attempt 2" in h["status"]
    clock.advance(9 * 10**9)
    assert worker.run_once() == 0  # the second wait is twice the first
    # the collector restarts (a new worker on the same store) and the bridge is back
    b.start()
    clock.advance(2 * 10**9)
    restarted = HandoffWorker(world.store, clients(b.url, token), backoff_s=5, clock=clock)
    assert restarted.run_once() == 1
    (h,) = _handoffs(world, cid)
    assert h["state"] == "accepted" and h["attempts"] == 3
    for _ in range(3):
        clock.advance(10**12)
        HandoffWorker(world.store, clients(b.url, token), clock=clock).run_once()
    assert len(_accepted_intakes(b, f"SC-{cid}")) == 1
    with b.ledger() as ledger:
        assert [c.case_id for c in ledger.cases(employee_id="E1001")] == [f"SC-{cid}"]


def test_an_answer_lost_in_a_crash_is_recognised_by_the_bridge_on_the_resend(
        world: World, bridge: tuple[Bridge, Path, dict[str, str]], clients: Any) -> None:
    b, token_file, _ = bridge
    client = clients(b.url, read_token(token_file))
    cid = to_hr_confirmed(world)
    ok(step(world, "hugo", cid, "sent_to_payroll"))
    with world.store.read() as tx:
        (row,) = tx.handoffs(cid)
    # the worker delivered the row, then died before recording the answer
    assert client.file(row.payload).status == 201
    assert HandoffWorker(world.store, client).run_once() == 1
    (h,) = _handoffs(world, cid)
    assert h["state"] == "accepted" and h["duplicate"] is True
    with b.ledger() as ledger:
        assert [c.case_id for c in ledger.cases(employee_id="E1001")] == [f"SC-{cid}"]
        decisions = [(i["decision"]) for i in ledger.intakes() if i["case_id"] == f"SC-{cid}"]
        assert decisions == ["accepted", "accepted"]  # the second is the duplicate: one case, filed once


def test_a_wrong_credential_keeps_the_row_pending_and_never_logs_the_token(
        world: World, bridge: tuple[Bridge, Path, dict[str, str]], caplog: pytest.LogCaptureFixture,
        clients: Any) -> None:
    b, _, _ = bridge
    cid = to_hr_confirmed(world)
    ok(step(world, "hugo", cid, "sent_to_payroll"))
    with caplog.at_level("DEBUG"):
        HandoffWorker(world.store, clients(b.url, "spc_wrong-token-value")).run_once()
    (h,) = _handoffs(world, cid)
    assert h["state"] == "pending" and "401" in (h["last_error"] or "")
    assert "spc_wrong-token-value" not in caplog.text
    with b.ledger() as ledger:
        assert ledger.intakes() == []


def test_wiring_runs_the_worker_with_the_background_jobs_and_stops_it(
        tmp_path: Path, bridge: tuple[Bridge, Path, dict[str, str]]) -> None:
    from fastapi.testclient import TestClient

    from collector.people.service import PeopleService
    from collector.settings import CasesSettings, CollectorSettings
    from collector.wiring import build_services

    b, token_file, _ = bridge
    settings = CollectorSettings(
        data_dir=tmp_path / "data", insecure_dev=True, detection_enabled=False, retention_days=None,
        cases=CasesSettings(payroll_url=b.url, payroll_token_file=token_file, payroll_poll_seconds=0.05,
                            max_attachment_bytes=4096))
    built = build_services(settings)
    assert built.handoff is not None and built.app.state.cases.max_attachment_bytes == 4096
    people = PeopleService(session_ttl_ns=3600 * 10**9)
    tokens = {}
    with built.store.transaction() as tx:
        for name, role in (("ana", "security_analyst"), ("hana", "hr"), ("hugo", "hr"), ("aud", "auditor")):
            people.create_user(tx=tx, username=name, role=role, password="correct horse battery", actor="t")
            tokens[name] = people.create_api_token(tx=tx, username=name, actor="t")
    alerts = add_alerts(built.store, first_ns=time.time_ns() - 40 * 86_400 * 10**9)
    client = TestClient(built.app)
    w = World(built.store, client, people, tokens, alerts, 0)
    built.background.start()
    try:
        cid = to_hr_confirmed(w)
        ok(step(w, "hugo", cid, "sent_to_payroll"))
        deadline = time.monotonic() + 10
        while _handoffs(w, cid)[0]["state"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _handoffs(w, cid)[0]["state"] == "accepted"
        big = w.api("ana", "POST", f"/api/v1/cases/{cid}/attachments", files={"file": ("b", b"x" * 5000, "a/b")})
        assert big.status_code == 413
    finally:
        built.background.stop()
        built.handoff.close()
        client.close()
        built.store.close()
    assert len(_accepted_intakes(b, f"SC-{cid}")) == 1
