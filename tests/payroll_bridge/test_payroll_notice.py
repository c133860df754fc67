"""The employee's notice in Chinese, as text and as a PDF whose text can be read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from pypdf import PdfReader

from conftest import Cli, case_doc, wages_doc


def test_cli_notice_writes_text_and_pdf_with_basis_schedule_and_appeal(
    cli: Cli, write_json: Callable[..., Path], tmp_path: Path
) -> None:
    env = {"SHOUMI_PAYROLL_LEDGER_PATH": str(tmp_path / "ledger.sqlite3"),
           "SHOUMI_PAYROLL_EMPLOYER_NAME": "守密示例有限公司"}
    assert cli("intake", str(write_json("case.json", case_doc(region="CN-GD-SZ"))), env=env).code == 0
    assert cli("wages", str(write_json("w.json", wages_doc(periods=("2026-12", "2027-01", "2027-02")))),
               env=env).code == 0
    result = cli("notice", "C-7", "--out", "notices", "--date", "2026-11-26", "--actor", "zhao.hr", env=env)
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["notice_id"] == "N-C-7-20261126"

    text = Path(doc["text"]).read_text(encoding="utf-8")
    for expected in ("《工资支付暂行规定》第十六条", "《中华人民共和国劳动合同法》第九十条", "人民币 5,000.00 元",
                     "2026年12月：扣除 1,600.00 元", "2027年2月：扣除 1,600.00 元", "当地月最低工资 2,520.00 元",
                     "劳动人事争议仲裁委员会", "15日内", "张三（工号 E1001）", "NDA-2024-v3", "第三方鉴定报告",
                     "广东省工资支付条例", "守密示例有限公司", "2026年11月26日"):
        assert expected in text, expected

    pdf = Path(doc["pdf"])
    assert pdf.read_bytes().startswith(b"%PDF-")
    extracted = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    squashed = "".join(extracted.split())
    for expected in ("关于从工资中扣除经济损失赔偿的书面通知", "N-C-7-20261126", "第十六条", "5,000.00",
                     "2026年12月：扣除1,600.00元", "劳动人事争议仲裁委员会"):
        assert expected in squashed, expected

    served = cli("notice-served", "C-7", "--notice-id", doc["notice_id"], "--served-on", "2026-11-27",
                 "--actor", "zhao.hr", env=env)
    assert served.code == 0
    # the appeal window runs from service; whatever today's date, a window of 100 years is still open
    export = cli("export", "--period", "2026-12", "--actor", "zhao.hr",
                 env={**env, "SHOUMI_PAYROLL_APPEAL_DAYS": "36500"}).json()
    assert export["lines"] == [] and [b["reason"] for b in export["blocked"]] == ["APPEAL_WINDOW_OPEN"]
    audit = [a["action"] for a in cli("audit", env=env).json()["audit"]]
    assert audit == ["intake.accepted", "notice.issued", "notice.served", "export.created"]


def test_notice_for_an_unknown_case_exits_1(cli: Cli, tmp_path: Path) -> None:
    result = cli("--ledger", str(tmp_path / "l.sqlite3"), "notice", "C-404", "--out", "n")
    assert result.code == 1 and "no case 'C-404'" in result.stderr


def test_notice_after_the_award_states_the_award(ledger, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from datetime import date

    from payroll_bridge.notice import render_text
    from payroll_bridge.services import build_notice
    from payroll_bridge.settings import PayrollSettings

    assert ledger.intake(payload=json.dumps(case_doc()), actor="a").decision.accepted
    ledger.pause(case_id="C-7", reason="仲裁", actor="a")
    ledger.resume(case_id="C-7", award_fen=300000, award_ref="裁决", actor="a")
    text = render_text(build_notice(ledger, case_id="C-7", settings=PayrollSettings(), issued_on=date(2027, 2, 1)))
    assert "应赔偿金额调整为：人民币 3,000.00 元" in text and "尚余 3,000.00 元" in text
    assert "目前尚无已核定工资的月份" in text
