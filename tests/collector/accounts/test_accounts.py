"""The accounts API and pages: users (it_admin), one's own account, API tokens with expiry, language; all audited."""

from __future__ import annotations

import re

from tests.collector.accounts.conftest import PASSWORD, World, csrf_of, sign_in

DAY_NS = 86_400 * 10**9


def test_it_admin_creates_disables_enables_and_resets_users_through_the_api(world: World) -> None:
    c, admin = world.client(), world.bearer("ivan")
    made = c.post("/api/v1/users", json={"username": "hr2", "role": "hr", "password": "a long password!"}, headers=admin)
    assert made.status_code == 201 and made.json()["role"] == "hr" and "password_hash" not in made.json()
    assert c.post("/api/v1/users", json={"username": "hr2", "role": "hr"}, headers=admin).status_code == 400
    assert c.post("/api/v1/users", json={"username": "x", "role": "boss"}, headers=admin).status_code == 400
    assert c.post("/api/v1/users", json={"username": "<script>", "role": "hr"}, headers=admin).status_code == 400
    assert c.post("/api/v1/users", json={"username": "y", "role": "hr", "password": "short"}, headers=admin).status_code == 400
    names = [u["username"] for u in c.get("/api/v1/users", headers=admin).json()["items"]]
    assert names == sorted(names) and "hr2" in names
    assert c.post("/api/v1/users/hr2/disable", headers=admin).json()["disabled"] is True
    assert c.post("/api/v1/users/ivan/disable", headers=admin).status_code == 400  # not oneself
    assert c.post("/api/v1/users/nobody/disable", headers=admin).status_code == 404
    assert c.post("/api/v1/users/hr2/enable", headers=admin).json()["disabled"] is False
    assert c.post("/api/v1/users/hr2/password", json={"password": "another long one"}, headers=admin).status_code == 200
    assert sign_in(world.client(), "hr2", "another long one").status_code == 303
    assert c.get("/api/v1/users", headers=world.bearer("aud")).status_code == 403
    actions = [(e.actor, e.action, e.target) for e in world.audit()]
    for action in ("user.create", "user.disable", "user.enable", "user.password_reset"):
        assert ("ivan", action, "hr2") in actions
    disable = next(e for e in world.audit() if e.action == "user.disable")
    assert disable.details["before"] == {"disabled": False} and disable.details["after"] == {"disabled": True}


def test_api_tokens_expire_are_named_listed_without_secrets_and_revocable(world: World) -> None:
    c = world.client()
    made = c.post("/api/v1/tokens", json={"name": "nightly export", "days": 30}, headers=world.bearer("aud"))
    assert made.status_code == 201
    body = made.json()
    secret, token_id = body["token"], body["id"]
    assert secret.startswith("sa_") and body["name"] == "nightly export" and not body["expired"]
    listed = c.get("/api/v1/tokens", headers=world.bearer("aud")).json()["items"]
    assert token_id in [t["id"] for t in listed] and secret not in str(listed) and "token" not in listed[0]
    mine = {"Authorization": f"Bearer {secret}"}
    assert c.get("/api/v1/account", headers=mine).json()["username"] == "aud"
    default = c.post("/api/v1/tokens", json={}, headers=world.bearer("aud")).json()
    assert default["expires_at"] > body["expires_at"]  # 90 days by default
    for days in (0, 366, -1):
        assert c.post("/api/v1/tokens", json={"days": days}, headers=world.bearer("aud")).status_code == 400
    world.clock.advance(31 * 86400)
    assert c.get("/api/v1/account", headers=mine).status_code == 401  # 30 days are over
    listed = {t["id"]: t for t in c.get("/api/v1/tokens", headers=world.bearer("aud")).json()["items"]}
    assert listed[token_id]["expired"] is True
    revoked = c.post(f"/api/v1/tokens/{default['id']}/revoke", headers=world.bearer("aud"))
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert c.get("/api/v1/account", headers={"Authorization": f"Bearer {default['token']}"}).status_code == 401
    assert c.post("/api/v1/tokens/0123456789abcdef/revoke", headers=world.bearer("aud")).status_code == 404
    other = c.post(f"/api/v1/tokens/{token_id}/revoke", headers=world.bearer("ana"))
    assert other.status_code == 404  # not one's own token: not found, whoever's it is
    by_admin = c.post("/api/v1/users/ana/tokens", json={"name": "ci"}, headers=world.bearer("ivan")).json()
    assert c.post(f"/api/v1/users/ana/tokens/{by_admin['id']}/revoke", headers=world.bearer("ivan")).json()["revoked"]
    actions = [e.action for e in world.audit()]
    assert actions.count("api_token.create") >= 3 and actions.count("api_token.revoke") == 2
    assert all(secret not in str(dict(e.details)) for e in world.audit())


def test_one_changes_ones_password_with_the_current_one_and_other_sessions_end(world: World) -> None:
    laptop, phone = world.client("10.0.0.1"), world.client("10.0.0.2")
    sign_in(laptop, "hana")
    sign_in(phone, "hana")
    page = laptop.get("/account")
    assert page.status_code == 200 and "修改密码" in page.text
    token = csrf_of(laptop, "/account")
    wrong = laptop.post("/account/password", data={"current_password": "not it at all", "new_password": "new long password",
                                                   "repeat_password": "new long password", "csrf_token": token})
    assert wrong.status_code == 400 and "当前密码不正确" in wrong.text
    done = laptop.post("/account/password", data={"current_password": PASSWORD, "new_password": "new long password",
                                                  "repeat_password": "new long password", "csrf_token": token},
                       follow_redirects=False)
    assert done.status_code == 303
    assert laptop.get("/api/v1/account").status_code == 200  # this session stays
    assert phone.get("/api/v1/account").status_code == 401  # the others end
    assert sign_in(world.client(), "hana", "new long password").status_code == 303
    actions = [e.action for e in world.audit()]
    assert "user.password_change" in actions and "password.change_failed" in actions


def test_the_account_page_makes_a_token_and_shows_its_secret_once(world: World) -> None:
    c = world.client()
    sign_in(c, "ana")
    token = csrf_of(c, "/account")
    made = c.post("/account/tokens", data={"name": "脚本", "days": "7", "csrf_token": token})
    assert made.status_code == 200
    secret = re.search(r"<code>(sa_[^<]+)</code>", made.text).group(1)  # type: ignore[union-attr]
    again = c.get("/account")
    assert "脚本" in again.text and secret not in again.text
    token_id = re.search(r"脚本</td><td><code>([0-9a-f]{16})</code>", again.text).group(1)  # type: ignore[union-attr]
    c.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": token})
    assert world.client().get("/api/v1/account", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_the_users_page_creates_disables_and_resets_through_its_forms(world: World) -> None:
    c = world.client()
    sign_in(c, "ivan")
    page = c.get("/users")
    assert page.status_code == 200 and "hana" in page.text and "人力资源" in page.text
    token = csrf_of(c, "/users")
    assert c.post("/users", data={"username": "sec2", "role": "security_analyst", "password": "",
                                  "csrf_token": token}, follow_redirects=False).status_code == 303
    bad = c.post("/users", data={"username": "bad name!", "role": "hr", "csrf_token": token})
    assert bad.status_code == 400 and "invalid user name" in bad.text
    assert c.post("/users/sec2/disable", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert "用户已停用" in c.get("/users?done=disabled").text
    assert c.post("/users/hana/password", data={"password": "reset by it admin", "csrf_token": token},
                  follow_redirects=False).status_code == 303
    assert sign_in(world.client(), "hana", "reset by it admin").status_code == 303
    assert c.post("/users/sec2/enable", data={"password": "x"}).status_code == 403  # no CSRF token
    hr = world.client()
    sign_in(hr, "hana", "reset by it admin")
    assert hr.get("/users").status_code == 403


def test_the_language_switch_is_kept_per_user_and_redirects_only_locally(world: World) -> None:
    anon = world.client()
    reply = anon.post("/preferences/lang", data={"lang": "en", "next": "/login", "csrf_token": csrf_of(anon)},
                      follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/login"
    assert anon.cookies["shoumi_lang"] == "en" and "Sign in" in anon.get("/login").text
    evil = anon.post("/preferences/lang", data={"lang": "zh", "next": "https://evil.example/", "csrf_token": csrf_of(anon)},
                     follow_redirects=False)
    assert evil.headers["location"] == "/"
    assert anon.post("/preferences/lang", data={"lang": "fr", "csrf_token": csrf_of(anon)}).status_code == 400
    assert anon.post("/preferences/lang", data={"lang": "en"}).status_code == 403  # no token: refused

    c = world.client()
    sign_in(c, "ana")
    c.post("/preferences/lang", data={"lang": "en", "next": "/account", "csrf_token": csrf_of(c, "/account")})
    with world.store.read() as tx:
        assert tx.get_user("ana").lang == "en"  # type: ignore[union-attr]
    fresh = world.client()  # another browser, no cookie: the account's choice
    sign_in(fresh, "ana")
    fresh.cookies.delete("shoumi_lang")
    assert "My account" in fresh.get("/account").text
    assert c.get("/api/v1/account").json()["lang"] == "en"
    assert any(e.action == "user.lang" and e.details["after"] == {"lang": "en"} for e in world.audit())
