"""The arbitrator's report: in the bundle (under the manifest), in Chinese, with the case, its timeline and
what was verified and how; and downloadable from the case page."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from collector.evidence import report
from shoumi_verify.check import verify_bundle

from tests.collector.evidence.world import build_case, export
from tests.verify.tamper import failure, flip


def _text(pdf: bytes) -> str:
    return "".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages)


def test_the_report_is_in_the_bundle_and_says_the_case_in_chinese(tmp_path: Path) -> None:
    world = build_case(tmp_path / "collector", batches=2)
    try:
        made = export(world, with_report=True)
    finally:
        world.store.close()
    pdf = made.members["report.pdf"]
    assert pdf.startswith(b"%PDF-")
    verify_bundle(made.members)  # listed in the manifest with its hash
    changed = {**made.members, "report.pdf": flip(pdf)}
    assert (failure(changed) or AssertionError("passed")).code == "member.hash"  # type: ignore[union-attr]
    text = "".join(_text(pdf).split())
    for needed in ("案件证据报告", "设计图纸外传", "时间线", "读取文件", "/srv/design/plan-1.dwg", "上传附件",
                   "可以核验什么", "哈希链", "默克尔树", "shoumi-verify", "第二十四条", "没有见证者副署",
                   "导出时，收集器已用同一验证程序", "终端哈希链完整"):
        assert needed in text, needed


def test_a_long_timeline_is_cut_and_says_where_the_rest_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = build_case(tmp_path / "collector", batches=2)
    try:
        members = export(world).members
    finally:
        world.store.close()
    monkeypatch.setattr(report, "MAX_TIMELINE", 2)
    text = "".join(_text(report.report_pdf(members)).split())
    assert "……另有" in text and "events.json" in text


def test_a_store_changed_behind_the_collectors_back_gives_no_bundle(tmp_path: Path) -> None:
    import sqlite3

    import pytest as _pytest

    from collector.evidence.bundle import EvidenceError

    world = build_case(tmp_path / "collector", batches=2)
    try:
        conn = sqlite3.connect(world.data_dir / "collector.db")
        with conn:
            conn.execute("UPDATE events SET path = '/tmp/innocent.txt' WHERE seq = 4")
        conn.close()
        with _pytest.raises(EvidenceError) as caught:
            export(world)
        assert caught.value.status == 409 and "event.field" in str(caught.value)
        with world.store.read() as tx:
            assert not [r for r in tx.list_audit(cursor=None, limit=50).items if r.action == "evidence.export"]
    finally:
        world.store.close()


def test_a_handed_off_case_carries_its_payroll_schedule(tmp_path: Path) -> None:
    import json

    from collector.cases.models import Handoff

    world = build_case(tmp_path / "collector", batches=2)
    try:
        with world.store.transaction() as tx:
            h = tx.add_handoff(Handoff(world.case_id, 1, '{"case_id": "SC-1"}', "hugo", 5))
            from dataclasses import replace
            tx.save_handoff(replace(h, state="accepted", schedule={
                "remaining_fen": 150000, "lines": [{"period": "2026-11", "deduction_fen": 50000, "state": "exported"}]}))
        made = export(world, with_report=True)
    finally:
        world.store.close()
    handoffs = json.loads(made.members["payroll/handoffs.json"])
    assert handoffs[0]["schedule"]["remaining_fen"] == 150000
    verify_bundle(made.members)
    text = "".join(_text(made.members["report.pdf"]).split())
    assert "薪资移交" in text and "2026-11：扣除500.00元" in text and "尚待扣回：1500.00元" in text
