"""The case page's export button and the API: the bundle downloads, verifies, and the export is audited."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from collector.evidence.views import EvidenceConfig
from collector.people.service import PeopleService
from collector.web.app import create_app
from collector.web.security import session_csrf_token
from shoumi_verify.check import verify_bundle

from tests.collector.evidence.world import CaseWorld, build_case


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[CaseWorld, TestClient, dict[str, str], PeopleService]]:
    world = build_case(tmp_path / "collector", batches=2)
    people = PeopleService(session_ttl_ns=3600 * 10**9)
    tokens = {}
    with world.store.transaction() as tx:
        for name, role in (("ana", "security_analyst"), ("hana", "hr"), ("ivan", "it_admin")):
            people.create_user(tx=tx, username=name, role=role, password=None, actor="test")
            tokens[name] = people.create_api_token(tx=tx, username=name, actor="test")
    web = create_app(store=world.store, people=people)
    web.state.evidence = EvidenceConfig(world.data_dir)
    with TestClient(web) as client:
        yield world, client, tokens, people
    world.store.close()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_the_api_gives_the_bundle_and_audits_who_exported_it(app: tuple[CaseWorld, TestClient, dict[str, str],
                                                                       PeopleService]) -> None:
    world, client, tokens, _ = app
    auth = {"Authorization": f"Bearer {tokens['ana']}"}
    reply = client.post(f"/api/v1/cases/{world.case_id}/evidence-bundle", headers=auth)
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/zip"
    assert f'case-{world.case_id}-evidence.zip' in reply.headers["content-disposition"]
    verify_bundle(_members(reply.content))
    with world.store.read() as tx:
        row = next(r for r in tx.list_audit(cursor=None, limit=5).items if r.action == "evidence.export")
    assert (row.actor, row.target, row.details["sha256"]) == ("ana", str(world.case_id), reply.headers["x-bundle-sha256"])
    assert client.post(f"/api/v1/cases/{world.case_id}/evidence-bundle",
                       headers={"Authorization": f"Bearer {tokens['ivan']}"}).status_code == 403
    assert client.post("/api/v1/cases/999/evidence-bundle", headers=auth).status_code == 404
    assert client.post(f"/api/v1/cases/{world.case_id}/evidence-bundle").status_code == 401


def test_without_keys_the_export_is_refused_with_a_reason(app: tuple[CaseWorld, TestClient, dict[str, str],
                                                                    PeopleService]) -> None:
    world, client, tokens, _ = app
    del client.app.state.evidence  # type: ignore[attr-defined]
    reply = client.post(f"/api/v1/cases/{world.case_id}/evidence-bundle",
                        headers={"Authorization": f"Bearer {tokens['hana']}"})
    assert reply.status_code == 409 and "no evidence keys" in reply.json()["detail"]


def test_the_case_page_has_the_button_for_whom_it_may(app: tuple[CaseWorld, TestClient, dict[str, str],
                                                                PeopleService]) -> None:
    world, client, _, people = app
    with world.store.transaction() as tx:
        people.reset_password(tx=tx, username="hana", password="correct horse battery", actor="test")
    session = people.login(store=world.store, username="hana", password="correct horse battery", peer="test")
    client.cookies.set("shoumi_session", session)
    page = client.get(f"/cases/{world.case_id}")
    assert page.status_code == 200 and "导出证据包（zip）" in page.text and "仲裁报告（PDF）" in page.text
    reply = client.post(f"/cases/{world.case_id}/evidence",
                        data={"csrf_token": session_csrf_token(session), "what": "bundle"})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/zip"
    verify_bundle(_members(reply.content))
    refused = client.post(f"/cases/{world.case_id}/evidence", data={"what": "bundle"})  # no CSRF token
    assert refused.status_code == 403
    missing = client.post("/cases/998/evidence", data={"csrf_token": session_csrf_token(session)})
    assert missing.status_code == 404 and "无法生成证据包" in missing.text


def test_the_report_downloads_from_the_api(app: tuple[CaseWorld, TestClient, dict[str, str], PeopleService]) -> None:
    world, client, tokens, _ = app
    reply = client.post(f"/api/v1/cases/{world.case_id}/evidence-report",
                        headers={"Authorization": f"Bearer {tokens['hana']}"})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/pdf"
    assert reply.content.startswith(b"%PDF-")
