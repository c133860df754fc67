"""WeCom web login (企业微信扫码登录) against H10's fake WeCom API on loopback: redirect, callback, getuserinfo."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient

from collector.people.models import NO_ROLE
from collector.people.sso import SsoConfigError
from collector.people.sso.service import load_sso
from collector.settings import SsoSettings
from collector.storage import open_store
from collector.web.deps import SESSION_COOKIE

from tests.collector.accounts.conftest import World, make_world
from tests.collector.wecom.fake_wecom import AGENT_ID, CORP_ID, SECRET, FakeWeCom

QR_PAGE = "https://login.work.weixin.qq.com/wwlogin/sso/login"


@pytest.fixture
def wecom() -> Iterator[FakeWeCom]:
    with FakeWeCom() as fake:
        yield fake


def _settings(wecom: FakeWeCom, **extra: object) -> SsoSettings:
    return SsoSettings.model_validate({"wecom": {"corp_id": CORP_ID, "agent_id": str(AGENT_ID), "secret": SECRET,
                                                 "api_base_url": wecom.base_url, "authorize_url": QR_PAGE, **extra}})


@pytest.fixture
def wecom_world(tmp_path: Path, wecom: FakeWeCom) -> Iterator[World]:
    store = open_store(tmp_path / "collector")
    try:
        world = make_world(store)
        world.app.state.sso = load_sso(_settings(wecom))
        yield world
    finally:
        store.close()


def wecom_scans(authorize_url: str, wecom: FakeWeCom, userid: str | None) -> str:
    """WeCom's QR page: the member scans and confirms; WeCom redirects back with a code and the state."""
    url = urlsplit(authorize_url)
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == QR_PAGE
    assert (q["login_type"], q["appid"], q["agentid"]) == ("CorpApp", CORP_ID, str(AGENT_ID))
    code = f"code-{userid}-{len(wecom.calls)}"
    wecom.add_code(code, userid)
    back = urlsplit(q["redirect_uri"])
    assert back.path == "/sso/wecom/callback"
    return f"{back.path}?{urlencode({'code': code, 'state': q['state']})}"


def _start(client: TestClient) -> str:
    answer = client.get("/sso/wecom/start?next=/cases", follow_redirects=False)
    assert answer.status_code == 303
    return answer.headers["location"]


def _me(client: TestClient) -> str | None:
    answer = client.get("/api/v1/account")
    return answer.json()["username"] if answer.status_code == 200 else None


def _grant(world: World, username: str, role: str) -> None:
    answer = world.client().post(f"/api/v1/users/{username}/role", json={"role": role}, headers=world.bearer("ivan"))
    assert answer.status_code == 200, answer.text


def test_a_member_without_a_role_is_created_and_told_to_ask_it_then_signs_in_once_granted(
        wecom_world: World, wecom: FakeWeCom) -> None:
    client = wecom_world.client()
    answer = client.get(wecom_scans(_start(client), wecom, "zhangsan"), follow_redirects=False)
    assert answer.status_code == 403 and "联系 IT" in answer.text and "zhangsan" in answer.text
    assert _me(client) is None
    with wecom_world.store.read() as tx:
        user = tx.get_user_by_subject(provider="wecom", subject="zhangsan")
    assert user is not None and user.role == NO_ROLE
    _grant(wecom_world, "zhangsan", "hr")
    answer = client.get(wecom_scans(_start(client), wecom, "zhangsan"), follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/cases"
    assert _me(client) == "zhangsan" and client.get("/cases").status_code == 200
    assert "/cgi-bin/auth/getuserinfo" in wecom.calls and wecom.tokens_issued == 1  # the token was cached
    login = next(e for e in wecom_world.audit() if e.action == "login")
    assert login.details["provider"] == "wecom"
    granted = next(e for e in wecom_world.audit() if e.action == "user.role")
    assert granted.actor == "ivan" and granted.details["after"] == {"role": "hr"}


def test_the_login_page_offers_wecom(wecom_world: World) -> None:
    assert "/sso/wecom/start?next=/" in wecom_world.client().get("/login").text


def test_a_callback_with_a_forged_state_is_refused_before_wecom_is_asked(wecom_world: World,
                                                                        wecom: FakeWeCom) -> None:
    client = wecom_world.client()
    callback = urlsplit(wecom_scans(_start(client), wecom, "lisi"))
    code = parse_qs(callback.query)["code"][0]
    answer = client.get(f"/sso/wecom/callback?{urlencode({'code': code, 'state': 'forged'})}", follow_redirects=False)
    assert answer.status_code == 403 and SESSION_COOKIE not in answer.cookies
    assert "/cgi-bin/auth/getuserinfo" not in wecom.calls
    refusal = next(e for e in wecom_world.audit() if e.action == "login.refused")
    assert refusal.details["provider"] == "wecom" and "state" in str(refusal.details["reason"])


def test_a_replayed_or_unknown_code_is_refused(wecom_world: World, wecom: FakeWeCom) -> None:
    _grant_later = wecom_world.client()
    state = parse_qs(urlsplit(_start(_grant_later)).query)["state"][0]
    answer = _grant_later.get(f"/sso/wecom/callback?{urlencode({'code': 'never-issued', 'state': state})}",
                              follow_redirects=False)
    assert answer.status_code == 403 and _me(_grant_later) is None
    refusal = next(e for e in wecom_world.audit() if e.action == "login.refused")
    assert refusal.details["reason"] == "WeCom refused the code (errcode 40029)"


def test_someone_outside_the_corp_is_refused(wecom_world: World, wecom: FakeWeCom) -> None:
    client = wecom_world.client()
    assert client.get(wecom_scans(_start(client), wecom, None), follow_redirects=False).status_code == 403
    refusal = next(e for e in wecom_world.audit() if e.action == "login.refused")
    assert "openid" in str(refusal.details["reason"])


def test_wecom_down_is_a_clear_message(wecom_world: World, wecom: FakeWeCom) -> None:
    client = wecom_world.client()
    callback = wecom_scans(_start(client), wecom, "lisi")
    wecom.down = True
    answer = client.get(callback, follow_redirects=False)
    assert answer.status_code == 503 and "公司登录服务无响应" in answer.text


def test_the_in_wecom_oauth_page_is_used_when_configured(tmp_path: Path, wecom: FakeWeCom) -> None:
    cfg = load_sso(_settings(wecom, authorize_url="https://open.weixin.qq.com/connect/oauth2/authorize"))
    assert cfg.wecom is not None
    url = cfg.wecom.authorization_url(redirect_uri="https://shoumi.example/sso/wecom/callback", state="s")
    assert url.endswith("#wechat_redirect") and "scope=snsapi_base" in url and f"appid={CORP_ID}" in url


def test_no_secret_no_start(wecom: FakeWeCom) -> None:
    with pytest.raises(SsoConfigError, match="secret"):
        load_sso(_settings(wecom, secret=None))
    assert SECRET not in repr(load_sso(_settings(wecom)).wecom)


def test_it_grants_a_role_on_the_accounts_page(wecom_world: World, wecom: FakeWeCom) -> None:
    from tests.collector.accounts.conftest import csrf_of, sign_in

    client = wecom_world.client()
    client.get(wecom_scans(_start(client), wecom, "lisi"), follow_redirects=False)  # created, no role
    it = wecom_world.client("10.0.0.5")
    assert sign_in(it, "ivan").status_code == 303
    page = it.get("/users").text
    assert "无角色" in page and 'action="/users/lisi/role"' in page
    done = it.post("/users/lisi/role", data={"role": "security_analyst", "csrf_token": csrf_of(it, "/users")},
                   follow_redirects=False)
    assert done.status_code == 303 and "角色已设置" in it.get(done.headers["location"]).text
    bad = it.post("/users/lisi/role", data={"role": "boss", "csrf_token": csrf_of(it, "/users")})
    assert bad.status_code == 400 and "unknown role" in bad.text
    assert client.get(wecom_scans(_start(client), wecom, "lisi"), follow_redirects=False).status_code == 303
    assert _me(client) == "lisi"
