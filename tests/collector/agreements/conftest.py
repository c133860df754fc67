"""Agreements tests: a real collector app on SQLite with one user per role, a test CA and a local RFC 3161 TSA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from collector.agreements.service import AgreementConfig
from collector.storage import open_store

from tests.collector.accounts.conftest import World, make_world
from tests.collector.agreements.pki import LocalTsa, Pki, make_pki


@pytest.fixture(scope="session")
def pki() -> Pki:
    return make_pki()


@pytest.fixture
def tsa(pki: Pki) -> Iterator[LocalTsa]:
    server = LocalTsa(pki)
    yield server
    server.stop()


@dataclass
class AgWorld:
    w: World
    pki: Pki
    tsa: LocalTsa

    def api(self, who: str, method: str, url: str, **kw: Any) -> Any:
        return self.w.client().request(method, url, headers=self.w.bearer(who), **kw)

    def ok(self, reply: Any, status: int = 200) -> Any:
        assert reply.status_code == status, reply.text
        return reply.json()

    def setup_employee(self, employee_id: str = "E-1001", *, user_name: str = "alice",
                       account: str | None = "emma") -> dict[str, int]:
        """A confidentiality template and a notice, one version each, and the employee linked to the account."""
        nda = self.ok(self.api("hana", "POST", "/api/v1/agreements", json={"title": "保密协议", "kind": "confidentiality"}), 201)
        v1 = self.ok(self.api("hana", "POST", f"/api/v1/agreements/{nda['id']}/versions", json={
            "version": "NDA-2024-v3", "text": "保密协议全文 第一条 ……", "effective_from": "2024-01-01"}), 201)
        notice = self.ok(self.api("hana", "POST", "/api/v1/agreements",
                                  json={"title": "员工监控告知书", "kind": "monitoring_notice"}), 201)
        from collector.agreements.models import default_notice_text

        n1 = self.ok(self.api("hana", "POST", f"/api/v1/agreements/{notice['id']}/versions", json={
            "version": "2024-1", "text": default_notice_text(retention_days=365), "effective_from": "2024-01-01"}), 201)
        self.ok(self.api("hana", "POST", "/api/v1/agreements/people",
                         json={"employee_id": employee_id, "user_name": user_name, "account": account}), 201)
        return {"nda": nda["id"], "nda_v": v1["id"], "notice": notice["id"], "notice_v": n1["id"]}


def config(pki: Pki, tsa: LocalTsa | None, *, max_upload: int = 10 * 1024 * 1024) -> AgreementConfig:
    ca = pki.ca_cert.public_bytes(Encoding.DER)
    return AgreementConfig(trust_roots=(ca,), tsa_url=tsa.url if tsa else None, tsa_ca=ca, tsa_timeout_seconds=3,
                           seal_retry_seconds=30, max_upload_bytes=max_upload)


@pytest.fixture
def ag(tmp_path: Path, pki: Pki, tsa: LocalTsa) -> Iterator[AgWorld]:
    store = open_store(tmp_path / "collector")
    try:
        w = make_world(store)
        w.app.state.agreements = config(pki, tsa)
        yield AgWorld(w, pki, tsa)
    finally:
        store.close()
