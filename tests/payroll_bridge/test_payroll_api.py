"""The HTTP intake, served by `shoumi-payroll serve` on a loopback port and by uvicorn in-process."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import uvicorn

from conftest import Cli, case_doc
from payroll_bridge.api import create_app
from payroll_bridge.ledger import Ledger
from payroll_bridge.minimum_wage import load_table
from payroll_bridge.settings import PayrollSettings


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, PayrollSettings, dict[str, str]]]:
    settings = PayrollSettings(ledger_path=tmp_path / "ledger.sqlite3")
    with Ledger(settings.resolved_ledger_path(), table=load_table()) as ledger:
        tokens = {name: ledger.create_client(name=name, actor="it.admin") for name in ("collector", "hr-tool")}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", settings, tokens
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def test_post_case_accepts_refuses_and_records_the_client_from_its_credential(
    server: tuple[str, PayrollSettings, dict[str, str]]
) -> None:
    url, settings, tokens = server
    # a header naming someone else changes nothing: the credential says who acted
    auth = bearer(tokens["collector"], **{"X-Shoumi-Actor": "wang.fang"})
    with httpx.Client(base_url=url) as client:
        created = client.post("/cases", content=json.dumps(case_doc()), headers=auth)
        assert created.status_code == 201 and created.json()["status"] == "accepted"
        again = client.post("/cases", content=json.dumps(case_doc()), headers=auth)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        bad = case_doc("C-8")
        del bad["loss"]["documents"]
        refused = client.post("/cases", content=json.dumps(bad), headers=auth)
        assert refused.status_code == 422
        assert [r["code"] for r in refused.json()["refusals"]] == ["LOSS_DOCUMENTS_MISSING"]
        got = client.get("/cases/C-7", headers=auth)
        assert got.status_code == 200 and got.json()["remaining_fen"] == 500000
        assert client.get("/cases/C-8", headers=auth).status_code == 404
        assert client.post("/cases", content="{nope", headers=auth).status_code == 422
        assert client.get("/healthz").json() == {"status": "ok"}
    with Ledger(settings.resolved_ledger_path(), table=load_table()) as ledger:
        audit = [(e.actor, e.action, e.subject) for e in ledger.audit_log() if e.action.startswith("intake")]
        assert audit == [("client:collector", "intake.accepted", "C-7"), ("client:collector", "intake.accepted", "C-7"),
                         ("client:collector", "intake.refused", "C-8"), ("client:collector", "intake.refused", "?")]
        assert ledger.intakes()[2]["refusals"][0]["code"] == "LOSS_DOCUMENTS_MISSING"
        assert ledger.intakes()[3]["refusals"][0]["code"] == "MALFORMED"


def test_no_credential_no_access_and_no_open_docs(server: tuple[str, PayrollSettings, dict[str, str]]) -> None:
    url, settings, tokens = server
    with httpx.Client(base_url=url) as client:
        assert client.post("/cases", content=json.dumps(case_doc())).status_code == 401
        assert client.post("/cases", content=json.dumps(case_doc()), headers=bearer("spc_guess")).status_code == 401
        assert client.post("/cases", content=json.dumps(case_doc()),
                           headers={"X-Shoumi-Actor": "collector"}).status_code == 401
        assert client.post("/cases", content=json.dumps(case_doc()), headers=bearer(tokens["collector"])).status_code == 201
        assert client.get("/cases/C-7").status_code == 401
        # another client may not read the collector's case, and cannot tell it exists
        other = client.get("/cases/C-7", headers=bearer(tokens["hr-tool"]))
        assert other.status_code == 404 and "张三" not in other.text
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404
    with Ledger(settings.resolved_ledger_path(), table=load_table()) as ledger:
        ledger.revoke_client(name="collector", actor="it.admin")
    with httpx.Client(base_url=url) as client:
        assert client.get("/cases/C-7", headers=bearer(tokens["collector"])).status_code == 401


def test_bodies_too_large_or_too_deep_are_refused_and_recorded_truncated(
    server: tuple[str, PayrollSettings, dict[str, str]]
) -> None:
    url, settings, tokens = server
    auth = bearer(tokens["collector"])
    with httpx.Client(base_url=url, timeout=30) as client:
        huge = client.post("/cases", content=b'{"case_id": "' + b"x" * (3 * 1024 * 1024) + b'"}', headers=auth)
        assert huge.status_code == 413 and "larger than" in huge.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the stream itself is cut off
            yield b'{"case_id": "'
            for _ in range(40):
                yield b"y" * 65536
            yield b'"}'

        streamed = client.post("/cases", content=chunks(), headers=auth)
        assert streamed.status_code == 413
        deep = client.post("/cases", content="[" * 5000 + "]" * 5000, headers=auth)
        assert deep.status_code == 422 and "nested" in deep.json()["detail"]
        digits = client.post("/cases", content='{"loss": {"amount_fen": ' + "1" * 5000 + "}}", headers=auth)
        assert digits.status_code == 422 and "digits" in digits.json()["detail"]
        fraction = case_doc()
        fraction["loss"]["amount_fen"] = 1234.5
        frac = client.post("/cases", content=json.dumps(fraction), headers=auth)
        assert frac.status_code == 422 and "NUMBER_NOT_WHOLE" in {r["code"] for r in frac.json()["refusals"]}
    with Ledger(settings.resolved_ledger_path(), table=load_table()) as ledger:
        intakes = ledger.intakes()
        assert [i["decision"] for i in intakes] == ["refused"] * 5
        assert all(i["actor"] == "client:collector" for i in intakes)
    import sqlite3

    with sqlite3.connect(settings.resolved_ledger_path()) as conn:
        assert max(len(p) for (p,) in conn.execute("SELECT payload FROM intakes")) <= 4096 + 64


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUMI_PAYROLL_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    return env


def test_serve_refuses_without_a_client_credential_or_with_the_old_shared_token(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("shoumi-payroll")
    out = subprocess.run([str(exe), "serve", "--listen", "127.0.0.1:0"], env=_env(tmp_path), cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "without any client credential" in out.stderr
    env = dict(_env(tmp_path), SHOUMI_PAYROLL_INTAKE_TOKEN="shared")
    out = subprocess.run([str(exe), "serve", "--listen", "127.0.0.1:0"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no longer used" in out.stderr


def test_serve_command_answers_on_loopback_with_a_client_credential(cli: Cli, tmp_path: Path) -> None:
    created = cli("client", "create", "collector", "--actor", "it.admin")
    assert created.code == 0, created.stderr
    token = created.json()["token"]
    assert cli("client", "create", "collector").code == 1  # one credential per client
    assert [c["name"] for c in cli("client", "list").json()["clients"]] == ["collector"]
    exe = Path(sys.executable).with_name("shoumi-payroll")
    proc = subprocess.Popen([str(exe), "serve", "--listen", "127.0.0.1:0"], env=_env(tmp_path), cwd=tmp_path,
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
        response = httpx.post(f"http://127.0.0.1:{port}/cases", content=json.dumps(case_doc()),
                              headers=bearer(token))
        assert response.status_code == 201
        assert httpx.post(f"http://127.0.0.1:{port}/cases", content=json.dumps(case_doc())).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
    ledger_path = tmp_path / "state" / "shoumi-payroll" / "ledger.sqlite3"
    with Ledger(ledger_path, table=load_table()) as ledger:
        assert ledger.case("C-7").state == "active"
        assert [e.actor for e in ledger.audit_log()] == ["it.admin", "client:collector"]
        assert "spc_" not in json.dumps(ledger.clients())


def test_the_ledger_is_private_and_lives_in_the_state_directory(cli: Cli, write_json, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("intake", str(write_json("case.json", case_doc()))).code == 0
    assert not list(tmp_path.glob("*.sqlite3")), "nothing is written to the current directory"
    state = tmp_path / "state" / "shoumi-payroll"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for f in state.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    loose = tmp_path / "loose.sqlite3"
    loose.touch(mode=0o644)
    os.chmod(loose, 0o644)
    assert cli("--ledger", str(loose), "audit").code == 0
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
