"""Local accounts turned off (sso.local_login=false): the password form refuses all but the break-glass accounts."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from collector.people.sso import SsoConfigError
from collector.people.sso.service import load_sso
from collector.settings import CollectorSettings, SsoSettings
from collector.storage import open_store

from tests.collector.accounts.conftest import World, make_world, sign_in
from tests.collector.sso.conftest import oidc_settings
from tests.collector.sso.fake_oidc import FakeOidcProvider


@pytest.fixture
def locked_world(tmp_path: Path, idp: FakeOidcProvider) -> Iterator[World]:
    store = open_store(tmp_path / "collector")
    try:
        world = make_world(store)
        world.app.state.sso = load_sso(SsoSettings.model_validate(
            {"oidc": oidc_settings(idp.issuer), "local_login": False, "break_glass": ["ivan"]}))
        yield world
    finally:
        store.close()


def test_the_password_form_refuses_everyone_but_break_glass(locked_world: World) -> None:
    client = locked_world.client()
    refused = sign_in(client, "hana")
    assert refused.status_code == 403 and "已关闭守密账号密码登录" in refused.text
    assert client.get("/api/v1/account").status_code == 401
    audit = locked_world.audit()
    refusal = next(e for e in audit if e.action == "login.refused")
    assert refusal.target == "hana" and refusal.details["reason"] == "local sign-in is turned off"
    assert not any(e.action == "login" for e in audit)
    assert sign_in(client, "nobody-here").status_code == 403
    assert locked_world.audit()[0].target == "unknown user"


def test_a_break_glass_account_signs_in_and_is_audited_as_such(locked_world: World) -> None:
    client = locked_world.client()
    assert sign_in(client, "ivan").status_code == 303
    assert client.get("/api/v1/account").json()["username"] == "ivan"
    actions = [e.action for e in locked_world.audit() if e.target == "ivan"]
    assert actions[:2] == ["login.break_glass", "login"]


def test_a_break_glass_account_with_a_wrong_password_is_still_refused(locked_world: World) -> None:
    assert sign_in(locked_world.client(), "ivan", "wrong password!!").status_code == 401


def test_the_login_page_hides_the_password_form_behind_break_glass(locked_world: World) -> None:
    page = locked_world.client().get("/login").text
    assert "<details" in page and "应急账号" in page and "/sso/oidc/start" in page


def test_nobody_could_sign_in_is_refused_at_start() -> None:
    with pytest.raises(SsoConfigError, match="nobody could sign in"):
        load_sso(SsoSettings(local_login=False))


def test_the_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "client-secret"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__OIDC__ISSUER", "https://idp.example.com/realms/acme/")
    monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__OIDC__CLIENT_ID", "shoumi")
    monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__OIDC__CLIENT_SECRET_FILE", str(secret))
    monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__OIDC__ROLE_MAP", '{"shoumi-hr": "hr"}')
    monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__LOCAL_LOGIN", "false")
    monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__BREAK_GLASS", '["ivan"]')
    settings = CollectorSettings()
    cfg = load_sso(settings.sso)
    assert cfg.oidc is not None and cfg.oidc.cfg.issuer == "https://idp.example.com/realms/acme"
    assert cfg.oidc._secret == "from-a-file" and "from-a-file" not in repr(settings) + repr(cfg.oidc)
    assert not cfg.local_allowed("hana") and cfg.local_allowed("ivan")
    monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__OIDC__ROLE_MAP", '{"shoumi-hr": "boss"}')
    with pytest.raises(SsoConfigError, match="unknown role 'boss'"):
        load_sso(CollectorSettings().sso)


def test_the_collector_does_not_start_with_sso_settings_that_cannot_work(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from collector.wiring import build_services

    with pytest.raises(SsoConfigError, match="nobody could sign in"):  # before the store is opened
        build_services(CollectorSettings(data_dir=tmp_path / "never", sso=SsoSettings(local_login=False)))
    assert not (tmp_path / "never").exists()
    env = {**os.environ, "SHOUMI_COLLECTOR_SSO__LDAP__URL": "ldap://127.0.0.1:1",
           "SHOUMI_COLLECTOR_SSO__LDAP__BIND_DN": "cn=reader,dc=example,dc=com",
           "SHOUMI_COLLECTOR_SSO__LDAP__USER_BASE": "dc=example,dc=com"}
    done = subprocess.run([str(Path(sys.executable).parent / "shoumi-collector"), "serve", "--data-dir",
                           str(tmp_path / "c"), "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                           "--enroll-listen", "127.0.0.1:0"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "sso.ldap.bind_dn is set without bind_password" in done.stderr
