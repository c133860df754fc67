"""Single sign-on in the browser (real processes, Debian's chromium): on the sign-in page HR clicks "Sign in with
Keycloak", the OpenID Connect provider (a fake on loopback, real RS256 ID tokens) signs her in with her groups,
and she lands on /cases as HR; the audit log says she signed in through the provider. Then she is taken out of
the HR group at the provider: her next sign-in is refused and the page tells her to ask IT.
The collector user was created by the sign-in (``shoumi-collector user list`` shows li.hua as hr).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.collector.sso.fake_oidc import CLIENT_ID, CLIENT_SECRET, FakeOidcProvider, Person
from tests.e2e.browser import browser, person, screenshot  # noqa: F401 (the fixture)
from tests.e2e.conftest import Collector


@pytest.mark.slow
def test_hr_signs_in_through_the_provider_and_lands_on_cases(collector: Collector, browser: Any, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    idp = FakeOidcProvider().start()
    try:
        secret = tmp_path / "oidc-secret"
        secret.write_text(CLIENT_SECRET + "\n")
        secret.chmod(0o600)
        monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__OIDC__ISSUER", idp.issuer)
        monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__OIDC__CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__OIDC__CLIENT_SECRET_FILE", str(secret))
        monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__OIDC__LABEL", "Keycloak")
        monkeypatch.setenv("SHOUMI_COLLECTOR_SSO__OIDC__ROLE_MAP", json.dumps({"shoumi-hr": "hr"}))
        collector.start()
        idp.sign_in_as(Person("c0ffee-1", "li.hua", ["staff", "shoumi-hr"]))
        page = person(browser)
        page.goto(f"{collector.http}/cases")
        page.wait_for_url("**/login?next=/cases")
        screenshot(page, "sso-login", tmp_path)
        page.click("text=使用 Keycloak 登录")
        page.wait_for_url(f"{collector.http}/cases")
        assert page.locator("h1").first.is_visible()
        screenshot(page, "sso-cases", tmp_path)
        users = collector.cli("user", "list")
        assert any(line.split("\t")[:2] == ["li.hua", "hr"] for line in users.splitlines()), users

        page.context.clear_cookies()
        idp.sign_in_as(Person("c0ffee-1", "li.hua", ["staff"]))  # taken out of shoumi-hr at the provider
        page.goto(f"{collector.http}/login")
        page.click("text=使用 Keycloak 登录")
        page.wait_for_selector("p.error")
        assert "联系 IT" in page.inner_text("p.error")
        assert all(c["name"] != "shoumi_session" for c in page.context.cookies())
    finally:
        idp.stop()
