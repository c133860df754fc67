"""The role matrix over every route the app has, found by walking it (routes added later are included):
anonymous callers get 401 (API) or the sign-in page (pages), every role lacking the route's permission
gets 403, and a role holding it gets through (a 400/404/422 for the placeholder ids is fine)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from collector.domain.roles import PERMISSIONS, ROLES, allowed
from collector.storage import open_store
from collector.web.security import session_csrf_token

from tests.collector.accounts.conftest import ROLE_USERS, World, make_world, sign_in

# Routes that need no permission, each for a reason.
ALLOWED_WITHOUT_PERMISSION = {
    ("GET", "/"),                   # sends each role to its page, or to sign-in
    ("GET", "/healthz"),            # load balancers: says only whether the store can be written
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("POST", "/preferences/lang"),  # the language switch works before signing in too
    ("GET", "/wecom/callback"),     # WeCom calls it: authenticated by its signature (collector/wecom/crypto.py)
    ("POST", "/wecom/callback"),
    # signing in through a provider happens before there is a session (collector/people/sso)
    ("GET", "/sso/oidc/start"), ("GET", "/sso/oidc/callback"), ("GET", "/sso/wecom/start"),
    ("GET", "/sso/wecom/callback"), ("POST", "/sso/ldap/login"),
}
# Permissions a view checks in its body besides its dependency (better said as a second dependency).
CHECKED_IN_BODY = {
    ("POST", "/alerts/{alert_id}/reveal"): ("alerts:read",),  # revealing beside an alert needs the alert too
}
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _routes(app: FastAPI) -> Iterator[APIRoute]:
    try:  # FastAPI includes routers lazily; this yields them with their full paths
        from fastapi.routing import _iter_included_route_candidates as candidates
    except ImportError:  # pragma: no cover - older FastAPI: the routes are flat already
        candidates = iter  # type: ignore[assignment]
    for route in candidates(app.routes):
        if isinstance(route, APIRoute):
            yield route


def _permission(dependant: Any) -> tuple[tuple[str, ...], bool] | None:
    """Every permission the route's dependencies require (all must hold), and whether it is a page."""
    found: list[str] = []
    page = False

    def walk(d: Any) -> None:
        nonlocal page
        for dep in d.dependencies:
            if getattr(dep.call, "permission", None) is not None:
                found.append(dep.call.permission)
                page = page or bool(getattr(dep.call, "page", False))
            walk(dep)

    walk(dependant)
    return (tuple(dict.fromkeys(found)), page) if found else None


def _url(route: APIRoute) -> str:
    types = {f.name: f.field_info.annotation for f in route.dependant.path_params}
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: "1" if types.get(m.group(1)) is int else "x", route.path)


@pytest.fixture
def matrix_world(tmp_path: Path) -> Iterator[World]:
    store = open_store(tmp_path / "collector")
    try:
        yield make_world(store)
    finally:
        store.close()


def test_every_route_has_a_permission_or_is_allowed_on_purpose(matrix_world: World) -> None:
    missing, unknown = [], []
    for route in _routes(matrix_world.app):
        for method in route.methods - {"HEAD"}:
            found = _permission(route.dependant)
            if found is None and (method, route.path) not in ALLOWED_WITHOUT_PERMISSION:
                missing.append(f"{method} {route.path}")
            if found is not None and not set(found[0]) <= set(PERMISSIONS):
                unknown.append(f"{method} {route.path}: {found[0]}")
    assert not missing, "routes without require()/require_page(): " + ", ".join(sorted(missing))
    assert not unknown, "permissions not in collector/domain/roles.py: " + ", ".join(unknown)


def test_the_role_matrix_over_every_route(matrix_world: World) -> None:
    w = matrix_world
    sessions: dict[str, str] = {}
    for role, name in ROLE_USERS.items():
        c = w.client()
        assert sign_in(c, name).status_code == 303
        sessions[role] = c.cookies["shoumi_session"]
    client = TestClient(w.app, raise_server_exceptions=False, follow_redirects=False)
    failures: list[str] = []
    checked = 0
    for route in _routes(w.app):
        found = _permission(route.dependant)
        if found is None:
            continue
        permissions, page = found
        url = _url(route)
        for method in sorted(route.methods - {"HEAD"}):
            checked += 1
            needed = permissions + CHECKED_IN_BODY.get((method, route.path), ())
            where = f"{method} {route.path} ({', '.join(needed)})"
            client.cookies.clear()
            anon = client.request(method, url)
            if page and not (anon.status_code == 303 and anon.headers.get("location", "").startswith("/login")):
                failures.append(f"{where}: anonymous page got {anon.status_code}, not the sign-in page")
            if not page and anon.status_code != 401:
                failures.append(f"{where}: anonymous got {anon.status_code}, not 401")
            for role in sorted(ROLES):
                if page:
                    client.cookies.clear()
                    client.cookies.set("shoumi_session", sessions[role])
                    headers = {"X-CSRF-Token": session_csrf_token(sessions[role])} if method in _UNSAFE else {}
                else:
                    client.cookies.clear()
                    headers = w.bearer(ROLE_USERS[role])
                got = client.request(method, url, headers=headers).status_code
                if all(allowed(role, p) for p in needed):
                    if got in (401, 403) or got >= 500:
                        failures.append(f"{where}: {role} holds it but got {got}")
                elif got != 403:
                    failures.append(f"{where}: {role} lacks it but got {got}, not 403")
    assert checked > 40  # the walk found the app's routes
    assert not failures, f"{len(failures)} of {checked} routes:\n" + "\n".join(failures)
