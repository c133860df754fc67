"""The HTTP intake, served by `shoumi-payroll serve` on a loopback port and by uvicorn in-process."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from conftest import case_doc
from payroll_bridge.api import create_app
from payroll_bridge.ledger import Ledger
from payroll_bridge.minimum_wage import load_table
from payroll_bridge.settings import PayrollSettings


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, PayrollSettings]]:
    settings = PayrollSettings(ledger_path=tmp_path / "ledger.sqlite3", intake_token=SecretStr("t0ken"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", settings
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


AUTH = {"Authorization": "Bearer t0ken", "X-Shoumi-Actor": "collector-7"}


def test_post_case_accepts_refuses_and_records(server: tuple[str, PayrollSettings]) -> None:
    url, settings = server
    with httpx.Client(base_url=url) as client:
        created = client.post("/cases", content=json.dumps(case_doc()), headers=AUTH)
        assert created.status_code == 201 and created.json()["status"] == "accepted"
        again = client.post("/cases", content=json.dumps(case_doc()), headers=AUTH)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        bad = case_doc("C-8")
        del bad["loss"]["documents"]
        refused = client.post("/cases", content=json.dumps(bad), headers=AUTH)
        assert refused.status_code == 422
        assert [r["code"] for r in refused.json()["refusals"]] == ["LOSS_DOCUMENTS_MISSING"]
        got = client.get("/cases/C-7", headers=AUTH)
        assert got.status_code == 200 and got.json()["remaining_fen"] == 500000
        assert client.get("/cases/C-8", headers=AUTH).status_code == 404
        assert client.post("/cases", content="{nope", headers=AUTH).status_code == 422
        assert client.post("/cases", content=json.dumps(case_doc()), headers={}).status_code == 401
        assert client.get("/healthz").json() == {"status": "ok"}
    with Ledger(settings.ledger_path, table=load_table()) as ledger:
        audit = [(e.actor, e.action, e.subject) for e in ledger.audit_log()]
        assert audit == [("collector-7", "intake.accepted", "C-7"), ("collector-7", "intake.accepted", "C-7"),
                         ("collector-7", "intake.refused", "C-8")]
        assert ledger.intakes()[-1]["refusals"][0]["code"] == "LOSS_DOCUMENTS_MISSING"


def test_serve_command_answers_on_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUMI_PAYROLL_")}
    env["SHOUMI_PAYROLL_LEDGER_PATH"] = str(tmp_path / "ledger.sqlite3")
    exe = Path(sys.executable).with_name("shoumi-payroll")
    proc = subprocess.Popen([str(exe), "serve", "--listen", "127.0.0.1:0"], env=env, cwd=tmp_path,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            match = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port, "the server did not report its port"
        response = httpx.post(f"http://127.0.0.1:{port}/cases", content=json.dumps(case_doc()))
        assert response.status_code == 201
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
    with Ledger(tmp_path / "ledger.sqlite3", table=load_table()) as ledger:
        assert ledger.case("C-7").state == "active"
        assert [e.actor for e in ledger.audit_log()] == ["intake-api"]


