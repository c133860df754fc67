"""Fixtures of the payroll bridge's tests: the real CLI as a subprocess, JSON files in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

_BIN = Path(sys.executable).with_name("shoumi-payroll")


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


Cli = Callable[..., CliResult]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Runs `shoumi-payroll ARGS...` in a subprocess, with a clean SHOUMI_PAYROLL_ environment."""

    def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> CliResult:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SHOUMI_PAYROLL_")}
        base["XDG_STATE_HOME"] = str(tmp_path / "state")  # the default ledger goes there, not to ~
        base.update(env or {})
        cmd = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "payroll_bridge"]
        proc = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, env=base, cwd=tmp_path, input=stdin, timeout=120
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[[str, Any], Path]:
    def write(name: str, doc: Any) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        return path

    return write


def issue_example() -> dict[str, Any]:
    """The INPUT.json of issue 5, verbatim."""
    return {
        "employee_id": "E1001",
        "region": "CN-SH",
        "cases": [{"case_id": "C-7", "confirmed_at": "2026-11-20", "loss_fen": 500000, "paused": False}],
        "periods": [{"period": "2026-12", "wage_fen": 800000, "excluded_items_fen": 0,
                     "social_insurance_fen": 84000, "housing_fund_fen": 56000}],
        "minimum_wage_fen": 274000,
        "minimum_wage_excludes_contributions": True,
        "employment_ends": "2027-03",
    }


@pytest.fixture
def example() -> dict[str, Any]:
    return issue_example()


def case_doc(case_id: str = "C-7", *, employee_id: str = "E1001", region: str = "CN-SH",
             loss_fen: int = 500000, confirmed: str = "2026-11-20", incident: str = "2026-10-02") -> dict[str, Any]:
    """A complete CASE.json that the intake accepts; each case id has its own incident and documents."""
    import hashlib

    def sha(what: str) -> str:
        return hashlib.sha256(f"{case_id}/{what}".encode()).hexdigest()

    return {
        "case_id": case_id,
        "employee": {"id": employee_id, "name": "张三", "region": region},
        "incident": {"date": incident, "summary": f"将设计图纸复制到个人网盘并外传（{case_id}）"},
        "confirmations": {
            "security": {"by": "li.wei", "at": f"{confirmed}T09:00:00+08:00"},
            "hr": {"by": "wang.fang", "at": f"{confirmed}T15:30:00+08:00"},
        },
        "loss": {"amount_fen": loss_fen, "kind": "direct", "documents": [
            {"title": "第三方鉴定报告", "sha256": sha("report")},
            {"title": "返工费用发票", "sha256": sha("invoice")},
        ]},
        "agreement": {
            "title": "保密协议", "version": "NDA-2024-v3", "document_sha256": "c" * 64, "signed_by": employee_id,
            "signed_at": "2024-03-01T10:00:00+08:00", "identity_check": "电子签约平台实名认证 + 短信验证码",
            "clause": "compensation",
        },
    }


def wages_doc(employee_id: str = "E1001", periods: tuple[str, ...] = ("2026-12",), wage_fen: int = 800000,
              si: int = 84000, hf: int = 56000) -> dict[str, Any]:
    return {"employee_id": employee_id, "periods": [
        {"period": p, "wage_fen": wage_fen, "social_insurance_fen": si, "housing_fund_fen": hf} for p in periods]}


class Clock:
    """A clock the test moves: the ledger reads it for timestamps and for appeal windows."""

    def __init__(self, now: Any) -> None:
        self.now = now

    def __call__(self) -> Any:
        return self.now

    def at_least(self, day: Any) -> None:
        """Moves the clock forward to noon (China time) of ``day`` unless it is already later."""
        from datetime import datetime, timedelta, timezone

        when = datetime(day.year, day.month, day.day, 4, 0, tzinfo=timezone.utc)
        if when > self.now:
            self.now = when
        self.now += timedelta(seconds=1)


@pytest.fixture
def ledger(tmp_path: Path):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    from payroll_bridge.ledger import Ledger
    from payroll_bridge.minimum_wage import load_table

    led = Ledger(tmp_path / "ledger.sqlite3", table=load_table(),
                 clock=Clock(datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)))
    yield led
    led.close()


def notify(ledger: Any, case_id: str, *, issued: Any = None, served: Any = None) -> str:
    """Issues a notice stating the case's current monthly amounts, serves it, and lets its appeal
    window pass on the ledger's clock (as HR would before the export)."""
    from datetime import date, timedelta

    issued = issued or date(2026, 11, 26)
    served = served or issued
    notice_id = ledger.next_notice_id(case_id=case_id, issued_on=issued)
    ledger.record_notice(case_id=case_id, notice_id=notice_id, issued_on=issued,
                         amounts={x.line.period: x.line.deduction_fen for x in ledger.lines(case_id=case_id)},
                         actor="zhao.hr")
    ledger._clock.at_least(served)
    ledger.notice_served(case_id=case_id, notice_id=notice_id, served_on=served, actor="zhao.hr")
    ledger._clock.at_least(ledger.window_ends(served) + timedelta(days=1))
    return str(notice_id)


class FakeFrappe:
    """A small Frappe site on 127.0.0.1: `POST/GET /api/resource/Additional Salary` with token auth.

    It validates like Frappe would for what the bridge sends, keeps the records, and can be told to
    fail: ``fail_next`` answers 503 that many times; ``drop_after_save`` stores a record and then
    closes the connection without answering (a lost response).
    """

    def __init__(self, key: str = "k3y", secret: str = "s3cret") -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, unquote, urlsplit

        self.records: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.fail_next = 0
        self.drop_after_save = 0
        fake = self
        auth = f"token {key}:{secret}"

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self) -> tuple[bool, dict[str, list[str]]]:
                parts = urlsplit(self.path)
                fake.requests.append((self.command, unquote(parts.path)))
                if unquote(parts.path) != "/api/resource/Additional Salary":
                    self._send(404, {"exc_type": "DoesNotExistError"})
                    return False, {}
                if self.headers.get("Authorization") != auth:
                    self._send(401, {"exc_type": "AuthenticationError", "exception": "Invalid token"})
                    return False, {}
                if fake.fail_next > 0:
                    fake.fail_next -= 1
                    self._send(503, {"exception": "Service Unavailable"})
                    return False, {}
                return True, parse_qs(parts.query)

            def do_GET(self) -> None:  # noqa: N802
                ok, query = self._route()
                if not ok:
                    return
                filters = json.loads(query.get("filters", ["[]"])[0])
                found = [r for r in fake.records if all(
                    (r.get(f) == v) if op == "=" else (r.get(f) != v) for _, f, op, v in filters)]
                self._send(200, {"data": [{"name": r["name"]} for r in found]})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                ok, _ = self._route()
                if not ok:
                    return
                doc = json.loads(body)
                missing = [f for f in ("employee", "salary_component", "amount", "payroll_date", "company")
                           if not doc.get(f)]
                if missing or float(doc["amount"]) <= 0:
                    self._send(417, {"exc_type": "MandatoryError", "exception": f"missing {missing}"})
                    return
                record = dict(doc, name=f"HR-ADS-{len(fake.records) + 1:04d}", docstatus=doc.get("docstatus", 0))
                fake.records.append(record)
                if fake.drop_after_save > 0:
                    fake.drop_after_save -= 1
                    self.close_connection = True
                    self.connection.close()
                    return
                self._send(200, {"data": record})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def frappe() -> Any:
    site = FakeFrappe()
    yield site
    site.close()


def cli_notify(cli: Cli, env: dict[str, str], case_id: str = "C-7", day: str = "2026-11-26") -> str:
    """Issues and serves a notice through the CLI on ``day`` (in the past, so with
    SHOUMI_PAYROLL_APPEAL_DAYS=1 in ``env`` its window has passed)."""
    issued = cli("notice", case_id, "--out", "notices", "--date", day, "--actor", "zhao.hr", env=env)
    assert issued.code == 0, issued.stderr
    notice_id = str(issued.json()["notice_id"])
    served = cli("notice-served", case_id, "--notice-id", notice_id, "--served-on", day, "--actor", "zhao.hr",
                 env=env)
    assert served.code == 0, served.stderr
    return notice_id
