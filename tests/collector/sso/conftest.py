"""The collector's web app on a real SQLite store with the fake providers of this folder; a browser-like walk."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from collector.people.sso.service import load_sso
from collector.settings import SsoSettings
from collector.storage import open_store

from tests.collector.accounts.conftest import World, make_world
from tests.collector.sso.fake_oidc import CLIENT_ID, CLIENT_SECRET, FakeOidcProvider

ROLE_MAP = {"shoumi-hr": "hr", "shoumi-security": "security_analyst", "shoumi-it": "it_admin"}


@pytest.fixture
def idp() -> Iterator[FakeOidcProvider]:
    provider = FakeOidcProvider().start()
    try:
        yield provider
    finally:
        provider.stop()


def oidc_settings(issuer: str, **extra: Any) -> dict[str, Any]:
    return {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "label": "Keycloak",
            "role_map": ROLE_MAP, **extra}


@pytest.fixture
def sso_world(tmp_path: Path, idp: FakeOidcProvider) -> Iterator[World]:
    store = open_store(tmp_path / "collector")
    try:
        world = make_world(store)
        world.app.state.sso = load_sso(SsoSettings.model_validate({"oidc": oidc_settings(idp.issuer)}))
        yield world
    finally:
        store.close()


def start_at_provider(client: TestClient, next_path: str = "/") -> str:
    """Clicks 'Sign in with ...': the URL the collector sends the browser to."""
    answer = client.get(f"/sso/oidc/start?next={next_path}", follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]


def provider_answer(authorize_url: str) -> str:
    """What the provider redirects the browser back to (a path with code and state on the collector)."""
    answer = httpx.get(authorize_url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["location"])
    return f"{back.path}?{back.query}"


def oidc_sign_in(client: TestClient) -> Any:
    """The whole walk: start, the provider, the callback (not followed)."""
    return client.get(provider_answer(start_at_provider(client)), follow_redirects=False)
