"""LDAP bind against a real slapd: good and wrong passwords, empty passwords, injection characters, groups to roles."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from collector.people.sso import SignInRefused, SsoConfigError
from collector.people.sso.ldap import LdapDirectory, escape_dn_value
from collector.people.sso.service import load_sso
from collector.settings import LdapSettings, SsoSettings
from collector.storage import open_store

from tests.collector.accounts.conftest import World, csrf_of, make_world
from tests.collector.sso.slapd import BASE, PEOPLE, READER_DN, READER_PASSWORD, Slapd

PEOPLE_BASE = f"ou=people,{BASE}"
ROLE_MAP = {f"cn=shoumi-hr,ou=groups,{BASE}": "hr", "shoumi-security": "security_analyst"}


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("ldap") / "slapd")
    try:
        yield server
    finally:
        server.stop()


def _settings(slapd: Slapd, **extra: object) -> LdapSettings:
    values: dict[str, object] = {"url": slapd.url, "bind_dn": READER_DN, "bind_password": READER_PASSWORD,
                                 "user_base": PEOPLE_BASE, "role_map": ROLE_MAP,
                                 "user_filter": "(&(objectClass=inetOrgPerson)(uid={username}))", **extra}
    return LdapSettings.model_validate(values)


@pytest.fixture
def ldap_world(tmp_path: Path, slapd: Slapd) -> Iterator[World]:
    store = open_store(tmp_path / "collector")
    try:
        world = make_world(store)
        world.app.state.sso = load_sso(SsoSettings(ldap=_settings(slapd)))
        yield world
    finally:
        store.close()


def _ldap_sign_in(world: World, username: str, password: str, address: str = "10.0.0.1") -> tuple[int, str | None]:
    client = world.client(address)
    answer = client.post("/sso/ldap/login", data={"username": username, "password": password, "next": "/",
                                                  "csrf_token": csrf_of(client)}, follow_redirects=False)
    me = client.get("/api/v1/account")
    return answer.status_code, me.json()["username"] if me.status_code == 200 else None


def test_the_right_password_signs_in_with_the_role_of_the_group(ldap_world: World) -> None:
    assert _ldap_sign_in(ldap_world, "li.hua", PEOPLE["li.hua"][0]) == (303, "li.hua")
    with ldap_world.store.read() as tx:
        user = tx.get_user_by_subject(provider="ldap", subject=f"uid=li.hua,{PEOPLE_BASE}")
    assert user is not None and user.role == "hr" and user.password_hash is None
    assert _ldap_sign_in(ldap_world, "wang.wei", PEOPLE["wang.wei"][0]) == (303, "wang.wei")  # a group by its CN
    with ldap_world.store.read() as tx:
        assert tx.get_user("wang.wei").role == "security_analyst"  # type: ignore[union-attr]


def test_the_login_page_offers_the_directory(ldap_world: World) -> None:
    page = ldap_world.client().get("/login")
    assert 'action="/sso/ldap/login"' in page.text and 'id="ldap-username"' in page.text


def test_a_wrong_password_is_refused_and_audited(ldap_world: World) -> None:
    assert _ldap_sign_in(ldap_world, "li.hua", "not the password") == (401, None)
    refusal = next(e for e in ldap_world.audit() if e.action == "login.refused")
    assert refusal.details["reason"] == "wrong password for the directory user"
    assert "not the password" not in repr([e.details for e in ldap_world.audit()])


def test_an_empty_password_is_refused_before_any_bind(ldap_world: World, slapd: Slapd) -> None:
    binds = len(slapd.binds())
    assert _ldap_sign_in(ldap_world, "li.hua", "") == (401, None)
    assert len(slapd.binds()) == binds  # slapd saw no bind at all (an unauthenticated bind would have succeeded)
    refusal = next(e for e in ldap_world.audit() if e.action == "login.refused")
    assert "empty password" in str(refusal.details["reason"])


def test_an_empty_password_is_refused_even_without_a_directory(slapd: Slapd) -> None:
    directory = LdapDirectory(_settings(slapd, url="ldap://127.0.0.1:1"), READER_PASSWORD)
    with pytest.raises(SignInRefused, match="empty password"):
        directory.authenticate("li.hua", "")


@pytest.mark.parametrize("username", ["l*", "*", "li.hua)(uid=*", "li.hua)(|(uid=*", "li.hua\\", "li.hua\x00",
                                      "*)(objectClass=*", "(uid=li.hua)"])
def test_injection_characters_in_the_user_name_do_not_change_the_query(ldap_world: World, slapd: Slapd,
                                                                       username: str) -> None:
    """'l*' with li.hua's password would sign in as 'l*' if the name went into the filter unescaped."""
    assert _ldap_sign_in(ldap_world, username, PEOPLE["li.hua"][0]) == (401, None)
    directory = ldap_world.app.state.sso.ldap
    sent = directory.user_filter(username)
    assert slapd.searches()[-1].lower() == sent.lower()  # what slapd searched for is the escaped filter
    assert sent.count("(") == sent.count(")") == 3  # the filter's shape is the configured one
    for ch in "*()\\\x00":
        assert ch not in sent.removeprefix("(&(objectClass=inetOrgPerson)(uid=").removesuffix("))").replace(
            "\\2a", "").replace("\\28", "").replace("\\29", "").replace("\\5c", "").replace("\\00", "")


@pytest.mark.parametrize("password", ["*", "p*ss(word)\\", ")(|(userPassword=*", "\\00", "x\x00"])
def test_injection_characters_in_the_password_are_just_wrong_passwords(ldap_world: World, password: str) -> None:
    assert _ldap_sign_in(ldap_world, "wang.wei", password) == (401, None)


def test_a_password_with_injection_characters_works_when_it_is_the_right_one(ldap_world: World) -> None:
    assert _ldap_sign_in(ldap_world, "wang.wei", PEOPLE["wang.wei"][0]) == (303, "wang.wei")


def test_a_person_whose_groups_map_to_no_role_is_told_to_ask_it(ldap_world: World) -> None:
    status, who = _ldap_sign_in(ldap_world, "zhao.lei", PEOPLE["zhao.lei"][0])
    assert (status, who) == (403, None)


def test_the_dn_template_escapes_the_user_name(slapd: Slapd) -> None:
    template = f"uid={{username}},{PEOPLE_BASE}"
    directory = LdapDirectory(_settings(slapd, bind_dn=None, user_base=None, user_dn_template=template), None)
    assert directory.authenticate("li.hua", PEOPLE["li.hua"][0]).groups[-1] == "shoumi-hr"
    assert directory.user_dn("a,uid=li.hua") == f"uid=a\\,uid\\=li.hua,{PEOPLE_BASE}"
    with pytest.raises(SignInRefused):  # the escaped name is one odd RDN, not li.hua's entry
        directory.authenticate(f"li.hua,{PEOPLE_BASE}", PEOPLE["li.hua"][0])
    assert escape_dn_value(" #a+b\x00 ") == "\\ \\#a\\+b\\00\\ "


def test_a_wrong_service_account_password_is_a_clear_outage(ldap_world: World, slapd: Slapd) -> None:
    ldap_world.app.state.sso = load_sso(SsoSettings(ldap=_settings(slapd, bind_password="wrong")))
    client = ldap_world.client()
    answer = client.post("/sso/ldap/login", data={"username": "li.hua", "password": PEOPLE["li.hua"][0],
                                                  "csrf_token": csrf_of(client)}, follow_redirects=False)
    assert answer.status_code == 503 and "公司登录服务无响应" in answer.text


def test_a_directory_that_is_down_is_a_clear_outage(ldap_world: World, slapd: Slapd) -> None:
    ldap_world.app.state.sso = load_sso(SsoSettings(ldap=_settings(slapd, url="ldap://127.0.0.1:1",
                                                                   timeout_seconds=1)))
    client = ldap_world.client()
    answer = client.post("/sso/ldap/login", data={"username": "li.hua", "password": "x",
                                                  "csrf_token": csrf_of(client)}, follow_redirects=False)
    assert answer.status_code == 503


def test_settings_that_cannot_work_stop_the_start(slapd: Slapd, tmp_path: Path) -> None:
    with pytest.raises(SsoConfigError, match="bind_password"):
        load_sso(SsoSettings(ldap=_settings(slapd, bind_password=None)))
    with pytest.raises(SsoConfigError, match="unknown role 'boss'"):
        load_sso(SsoSettings(ldap=_settings(slapd, role_map={"x": "boss"})))
    with pytest.raises(SsoConfigError, match="cannot be read"):
        load_sso(SsoSettings(ldap=_settings(slapd, bind_password=None, bind_password_file=tmp_path / "nope")))
