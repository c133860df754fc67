"""Sessions: cookie flags, a new session at every sign-in, revoked at sign-out, idle and absolute expiry,
disabled users stop at once; login CSRF through the real app."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.collector.accounts.conftest import PASSWORD, World, csrf_of, sign_in


def test_the_session_cookie_is_httponly_lax_and_secure_over_tls(world: World) -> None:
    cookie = sign_in(world.client(), "ana").headers["set-cookie"].lower()
    assert "shoumi_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    tls = TestClient(world.app, base_url="https://testserver")
    reply = sign_in(tls, "ana")
    assert reply.status_code == 303 and "secure" in reply.headers["set-cookie"].lower()


def test_every_sign_in_makes_a_new_session_and_revokes_the_one_sent(world: World) -> None:
    client = world.client()
    sign_in(client, "ana")
    first = client.cookies["shoumi_session"]
    assert client.get("/api/v1/account").json()["username"] == "ana"
    sign_in(client, "ana")
    second = client.cookies["shoumi_session"]
    assert second != first
    stale = world.client()
    stale.cookies.set("shoumi_session", first)
    assert stale.get("/api/v1/account").status_code == 401  # the session sent with the sign-in is gone


def test_sign_out_revokes_the_session_on_the_server(world: World) -> None:
    client = world.client()
    sign_in(client, "ana")
    token = client.cookies["shoumi_session"]
    assert client.post("/logout", data={"csrf_token": csrf_of(client)}, follow_redirects=False).status_code == 303
    replay = world.client()
    replay.cookies.set("shoumi_session", token)
    assert replay.get("/api/v1/account").status_code == 401
    assert replay.get("/account", follow_redirects=False).headers["location"].startswith("/login")


def test_a_session_idles_out_and_ends_after_its_absolute_lifetime(world: World) -> None:
    client = world.client()
    sign_in(client, "ana")
    for _ in range(10):  # used every 25 minutes for over 4 hours: alive past the idle limit of 30
        world.clock.advance(25 * 60)
        assert client.get("/api/v1/account").status_code == 200
    world.clock.advance(31 * 60)
    assert client.get("/api/v1/account").status_code == 401  # idle too long
    sign_in(client, "ana")
    for _ in range(28):  # 28 x 25 min = 11 h 40 min, under the 12 h lifetime
        world.clock.advance(25 * 60)
        assert client.get("/api/v1/account").status_code == 200
    world.clock.advance(25 * 60)
    assert client.get("/api/v1/account").status_code == 401  # 12 hours are over, however used


def test_disabling_a_user_stops_their_sessions_and_tokens_at_once(world: World) -> None:
    client = world.client()
    sign_in(client, "ana")
    assert client.get("/api/v1/account").status_code == 200
    assert world.client().get("/api/v1/account", headers=world.bearer("ana")).status_code == 200
    assert world.client().post("/api/v1/users/ana/disable", headers=world.bearer("ivan")).json()["disabled"] is True
    assert client.get("/api/v1/account").status_code == 401
    assert world.client().get("/api/v1/account", headers=world.bearer("ana")).status_code == 401
    assert sign_in(world.client(), "ana").status_code == 401
    world.client().post("/api/v1/users/ana/enable", headers=world.bearer("ivan"))
    assert client.get("/api/v1/account").status_code == 401  # enabling does not bring old sessions back
    assert sign_in(world.client(), "ana").status_code == 303


def test_login_csrf_a_cross_origin_or_tokenless_sign_in_is_refused(world: World) -> None:
    client = world.client()
    token = csrf_of(client)
    form = {"username": "ana", "password": PASSWORD, "csrf_token": token}
    cross = client.post("/login", data=form, headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert cross.status_code == 403 and "cross-origin" in cross.text
    fetch = client.post("/login", data=form, headers={"Sec-Fetch-Site": "cross-site"}, follow_redirects=False)
    assert fetch.status_code == 403
    assert client.post("/login", data={"username": "ana", "password": PASSWORD},
                       follow_redirects=False).status_code == 403
    other = world.client()  # another browser's token is not this one's
    assert other.post("/login", data=form, follow_redirects=False).status_code == 403
    ok = client.post("/login", data=form, headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert ok.status_code == 303 and "shoumi_session" in client.cookies


def test_session_writes_need_the_session_token_and_bearer_writes_do_not(world: World) -> None:
    client = world.client()
    sign_in(client, "ivan")
    body = {"username": "newbie", "role": "hr", "password": "long enough password"}
    refused = client.post("/api/v1/users", json=body)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    token = csrf_of(client, "/account")
    assert client.post("/api/v1/users", json=body, headers={"X-CSRF-Token": token}).status_code == 201
    body["username"] = "newbie2"
    assert world.client().post("/api/v1/users", json=body, headers=world.bearer("ivan")).status_code == 201


def test_sign_in_redirects_only_to_local_paths(world: World) -> None:
    for target, expected in (("/cases/5", "/cases/5"), ("https://evil.example/", "/"), ("//evil.example", "/"),
                             ("/\\evil.example", "/")):
        client = world.client()
        reply = client.post("/login", data={"username": "ana", "password": PASSWORD, "next": target,
                                            "csrf_token": csrf_of(client)}, follow_redirects=False)
        assert reply.headers["location"] == expected, target
