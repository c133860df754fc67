"""OpenID Connect sign-in against a real provider on loopback: the good path, forged and replayed callbacks, outages."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from fastapi.testclient import TestClient

from collector.people.models import NO_ROLE
from collector.web.deps import SESSION_COOKIE

from tests.collector.accounts.conftest import World
from tests.collector.sso.conftest import oidc_sign_in, provider_answer, start_at_provider
from tests.collector.sso.fake_oidc import FakeOidcProvider, Person

HANA = Person(sub="8f14e45f-ceea-467f", username="li.hua", groups=["staff", "shoumi-hr"])


def _refusals(world: World) -> list[dict[str, object]]:
    return [e.details for e in world.audit() if e.action == "login.refused"]


def _signed_in_as(client: TestClient) -> str | None:
    answer = client.get("/api/v1/account")
    return answer.json()["username"] if answer.status_code == 200 else None


def test_a_person_in_the_hr_group_lands_on_cases_as_hr(sso_world: World, idp: FakeOidcProvider) -> None:
    idp.sign_in_as(HANA)
    client = sso_world.client()
    authorize = start_at_provider(client)
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["nonce"][0] and query["state"][0]
    back = client.get(provider_answer(authorize), follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"] == "/"
    assert client.get("/", follow_redirects=False).headers["location"] == "/cases"
    assert client.get("/cases").status_code == 200
    with sso_world.store.read() as tx:
        user = tx.get_user_by_subject(provider="oidc", subject=HANA.sub)
    assert user is not None and user.username == "li.hua" and user.role == "hr" and user.password_hash is None
    logins = [e for e in sso_world.audit() if e.action == "login" and e.target == "li.hua"]
    assert logins and logins[0].details["provider"] == "oidc"
    # the session is the collector's usual one: its CSRF token holds a form post
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403  # no CSRF token
    assert _signed_in_as(client) == "li.hua"


def test_the_login_page_offers_the_provider(sso_world: World) -> None:
    page = sso_world.client().get("/login?next=/cases")
    assert "/sso/oidc/start?next=/cases" in page.text and "Keycloak" in page.text


def test_a_forged_state_is_refused_audited_and_signs_nobody_in(sso_world: World, idp: FakeOidcProvider) -> None:
    idp.sign_in_as(HANA)
    client = sso_world.client()
    back = urlsplit(provider_answer(start_at_provider(client)))
    query = parse_qs(back.query)
    forged = client.get(f"{back.path}?{urlencode({'code': query['code'][0], 'state': 'x' * 43})}",
                        follow_redirects=False)
    assert forged.status_code == 403 and SESSION_COOKIE not in forged.cookies
    assert _signed_in_as(client) is None
    assert "state does not match" in str(_refusals(sso_world)[0]["reason"])
    assert idp.token_calls == 0  # the code was never exchanged


def test_a_callback_in_another_browser_is_refused(sso_world: World, idp: FakeOidcProvider) -> None:
    """Login CSRF: the victim's browser is given the attacker's callback; it has no matching state cookie."""
    idp.sign_in_as(HANA)
    attacker, victim = sso_world.client("10.0.0.9"), sso_world.client("10.0.0.2")
    callback = provider_answer(start_at_provider(attacker))
    assert victim.get(callback, follow_redirects=False).status_code == 403
    assert _signed_in_as(victim) is None


def test_a_replayed_callback_is_refused(sso_world: World, idp: FakeOidcProvider) -> None:
    idp.sign_in_as(HANA)
    client = sso_world.client()
    callback = provider_answer(start_at_provider(client))
    state = parse_qs(urlsplit(callback).query)["state"][0]
    assert client.get(callback, follow_redirects=False).status_code == 303
    fresh = sso_world.client("10.0.0.3")
    fresh.cookies.set("shoumi_sso_state", state, path="/sso/")
    again = fresh.get(callback, follow_redirects=False)
    assert again.status_code == 403 and _signed_in_as(fresh) is None
    assert "already used" in str(_refusals(sso_world)[0]["reason"])


def test_a_replayed_code_is_refused_by_the_provider_and_audited(sso_world: World, idp: FakeOidcProvider) -> None:
    idp.sign_in_as(HANA)
    first = sso_world.client()
    callback = provider_answer(start_at_provider(first))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    assert first.get(callback, follow_redirects=False).status_code == 303
    second = sso_world.client("10.0.0.4")  # a new sign-in, with the code stolen from the first
    fresh_state = parse_qs(urlsplit(start_at_provider(second)).query)["state"][0]
    replay = second.get(f"/sso/oidc/callback?{urlencode({'code': code, 'state': fresh_state})}",
                        follow_redirects=False)
    assert replay.status_code == 403 and _signed_in_as(second) is None
    assert "refused the code (invalid_grant)" in str(_refusals(sso_world)[0]["reason"])


def _forged(sso_world: World, idp: FakeOidcProvider, **forge: object) -> str:
    idp.sign_in_as(HANA)
    for key, value in forge.items():
        setattr(idp.forge, key, value)
    client = sso_world.client()
    answer = oidc_sign_in(client)
    assert answer.status_code == 403 and SESSION_COOKIE not in answer.cookies
    assert _signed_in_as(client) is None
    with sso_world.store.read() as tx:
        assert tx.get_user_by_subject(provider="oidc", subject=HANA.sub) is None
    return str(_refusals(sso_world)[0]["reason"])


def test_a_token_signed_by_another_key_is_refused(sso_world: World, idp: FakeOidcProvider) -> None:
    assert "signature does not verify" in _forged(sso_world, idp, other_key=True)


def test_a_token_signed_by_a_key_the_provider_does_not_publish_is_refused(sso_world: World,
                                                                           idp: FakeOidcProvider) -> None:
    assert "does not publish" in _forged(sso_world, idp, unknown_kid=True)


def test_an_expired_token_is_refused(sso_world: World, idp: FakeOidcProvider) -> None:
    assert "exp" in _forged(sso_world, idp, expired=True)


def test_a_wrong_nonce_is_refused(sso_world: World, idp: FakeOidcProvider) -> None:
    assert "nonce" in _forged(sso_world, idp, nonce="not-the-one-we-sent")


def test_a_token_for_another_client_is_refused(sso_world: World, idp: FakeOidcProvider) -> None:
    assert "aud" in _forged(sso_world, idp, audience="another-app")


def test_a_token_from_another_issuer_is_refused(sso_world: World, idp: FakeOidcProvider) -> None:
    assert "iss" in _forged(sso_world, idp, issuer="https://evil.example")


def test_a_provider_that_is_down_gets_a_clear_message(sso_world: World, idp: FakeOidcProvider) -> None:
    idp.stop()
    client = sso_world.client()
    answer = client.get("/sso/oidc/start", follow_redirects=False)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    assert "公司登录服务无响应" in answer.text
    assert "unreachable" in str(_refusals(sso_world)[0]["reason"])


def test_a_person_removed_at_the_provider_loses_access_when_the_session_ends(sso_world: World,
                                                                             idp: FakeOidcProvider) -> None:
    idp.sign_in_as(HANA)
    client = sso_world.client()
    assert oidc_sign_in(client).status_code == 303
    assert _signed_in_as(client) == "li.hua"
    sso_world.clock.advance(25 * 60)
    assert client.get("/cases").status_code == 200  # used: not idle
    sso_world.clock.advance(25 * 60)
    assert client.get("/cases").status_code == 200
    sso_world.clock.advance(11 * 60)  # 61 minutes after sign-in: sso.session_minutes is 60
    assert _signed_in_as(client) is None
    idp.sign_in_as(None)  # removed at the provider
    answer = oidc_sign_in(client)
    assert answer.status_code == 403 and _signed_in_as(client) is None
    assert "access_denied" in str(_refusals(sso_world)[0]["reason"])


def test_a_person_whose_groups_no_longer_map_loses_access_and_sessions(sso_world: World,
                                                                       idp: FakeOidcProvider) -> None:
    idp.sign_in_as(HANA)
    other_browser, client = sso_world.client("10.0.0.7"), sso_world.client()
    assert oidc_sign_in(other_browser).status_code == 303
    idp.sign_in_as(Person(HANA.sub, HANA.username, ["staff"]))  # taken out of shoumi-hr
    answer = oidc_sign_in(client)
    assert answer.status_code == 403 and "联系 IT" in answer.text
    assert _signed_in_as(client) is None and _signed_in_as(other_browser) is None  # the other session ended too
    with sso_world.store.read() as tx:
        assert tx.get_user("li.hua").role == NO_ROLE  # type: ignore[union-attr]
    refusal = _refusals(sso_world)[0]
    assert refusal["reason"] == "the provider's groups map to no role" and refusal["sessions_ended"] == 1


def test_a_provider_name_never_takes_over_a_local_account(sso_world: World, idp: FakeOidcProvider) -> None:
    idp.sign_in_as(Person("another-sub", "ivan", ["shoumi-hr"]))  # ivan is the local it_admin
    client = sso_world.client()
    assert oidc_sign_in(client).status_code == 303
    assert _signed_in_as(client) == "ivan.oidc"
    with sso_world.store.read() as tx:
        assert tx.get_user("ivan").role == "it_admin"  # type: ignore[union-attr]


def test_no_secret_in_the_audit(sso_world: World, idp: FakeOidcProvider) -> None:
    from tests.collector.sso.fake_oidc import CLIENT_SECRET

    idp.sign_in_as(HANA)
    oidc_sign_in(sso_world.client())
    text = repr([(e.action, e.target, e.details) for e in sso_world.audit()])
    assert CLIENT_SECRET not in text and "code" not in text.replace("code)", "")
    assert CLIENT_SECRET not in repr(sso_world.app.state.sso.oidc)


def test_the_token_request_reaches_the_real_provider_over_http(idp: FakeOidcProvider) -> None:
    assert httpx.get(f"{idp.issuer}/.well-known/openid-configuration").json()["issuer"] == idp.issuer
