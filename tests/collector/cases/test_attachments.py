"""Attachments: kept by SHA-256 and size, never under the uploaded name, downloaded as attachments only."""

from __future__ import annotations

import hashlib
import re

import pytest

from collector.cases.service import CaseError, safe_display_name
from tests.collector.cases.conftest import World
from tests.collector.cases.flow import ok, open_case


@pytest.mark.parametrize("name, shown", [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\win.ini", "win.ini"),
    ("/abs/path/报告.pdf", "报告.pdf"),
    ("..", "attachment"),
    (".hidden", "hidden"),
    ("", "attachment"),
    ("a" * 500 + ".pdf", "a" * 196 + ".pdf"),
    ("<script>alert(1)</script>.html", "script>.html"),
])
def test_display_names_are_sanitised(name: str, shown: str) -> None:
    assert safe_display_name(name) == shown
    assert len(safe_display_name(name)) <= 200


@pytest.mark.parametrize("name", ["a\x00b.pdf", "a\nb.pdf", "a\rb", "evil\u202egpj.exe", "\x1b[31m.txt"])
def test_names_with_nul_or_control_characters_are_refused(name: str) -> None:
    with pytest.raises(CaseError) as err:
        safe_display_name(name)
    assert err.value.status == 422


def test_upload_download_and_limits(world: World) -> None:
    cid = open_case(world)
    content = b"%PDF-1.4 evidence " * 100
    made = ok(world.api("ana", "POST", f"/api/v1/cases/{cid}/attachments",
                        files={"file": ("../../../etc/passwd", content, "text/html")}), 201)
    assert made["name"] == "passwd" and made["size"] == len(content)
    assert made["sha256"] == hashlib.sha256(content).hexdigest()
    got = world.api("aud", "GET", made["download"])
    assert got.status_code == 200 and got.content == content
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-type"] == "application/octet-stream"
    cn = ok(world.api("ana", "POST", f"/api/v1/cases/{cid}/attachments",
                      files={"file": ("鉴定 报告.pdf", b"x", "application/pdf")}), 201)
    disp = world.api("ana", "GET", cn["download"]).headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+"; filename\*=UTF-8\'\'[A-Za-z0-9%._~-]+', disp), disp
    assert "filename*=UTF-8''%E9%89%B4" in disp
    for raw in (b"a\x00.pdf", b"a\x1b[2J.pdf"):  # written into the multipart header as is
        body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + raw +
                b"\"\r\nContent-Type: a/b\r\n\r\nx\r\n--B--\r\n")
        bad = world.api("ana", "POST", f"/api/v1/cases/{cid}/attachments", content=body,
                        headers={"Content-Type": "multipart/form-data; boundary=B"})
        assert bad.status_code in (400, 422), bad.text
    assert world.api("aud", "POST", f"/api/v1/cases/{cid}/attachments", files={"file": ("a", b"x", "a/b")}
                     ).status_code == 403
    assert world.api("ana", "GET", f"/api/v1/cases/{cid}/attachments/999999").status_code == 404
    other = open_case(world, alerts=[world.alerts[2]])
    assert world.api("ana", "GET", f"/api/v1/cases/{other}/attachments/{made['id']}").status_code == 404
    names = [a["name"] for a in ok(world.api("aud", "GET", f"/api/v1/cases/{cid}/attachments"))]
    assert names == ["passwd", "鉴定 报告.pdf"]


def test_files_over_the_limit_get_413_and_nothing_is_stored(world: World) -> None:
    from collector.cases.views import CaseConfig

    world.client.app.state.cases = CaseConfig(max_attachment_bytes=1000)  # type: ignore[attr-defined]
    cid = open_case(world)
    big = world.api("ana", "POST", f"/api/v1/cases/{cid}/attachments", files={"file": ("big.bin", b"x" * 1001, "a/b")})
    assert big.status_code == 413 and "1000" in big.json()["detail"]
    assert ok(world.api("ana", "POST", f"/api/v1/cases/{cid}/attachments",
                        files={"file": ("ok.bin", b"x" * 1000, "a/b")}), 201)["size"] == 1000
    huge = world.api("ana", "POST", f"/api/v1/cases/{cid}/attachments",
                     files={"file": ("huge.bin", b"y" * 300_000, "a/b")})
    assert huge.status_code == 413
    assert [a["name"] for a in ok(world.api("ana", "GET", f"/api/v1/cases/{cid}/attachments"))] == ["ok.bin"]
    with world.store.read() as tx:
        assert [h.action for h in tx.case_history(cid)] == ["open", "attach"]
