"""schemathesis against /openapi.json: whatever a caller sends to any API route, the answer is never a 5xx.

Each operation is called with the bearer token of a role that holds the route's permission, so the
generated requests reach the views (not only the 403 of the permission check), on a real SQLite store
with an alert, a case and a suppression in it for the generated ids to find.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, settings

from collector.domain.roles import allowed
from collector.storage import open_store
from tests.collector.accounts.conftest import ROLE_USERS, World, make_world


def _permissions(route: APIRoute) -> tuple[str, ...]:
    found: list[str] = []

    def walk(d: Any) -> None:
        for dep in d.dependencies:
            if getattr(dep.call, "permission", None) is not None:
                found.append(dep.call.permission)
            walk(dep)

    walk(route.dependant)
    return tuple(found)


def _token_for(world: World, method: str, path: str) -> dict[str, str]:
    """The bearer header of a user whose role holds every permission the route asks for."""
    for route in world.app.routes:
        if isinstance(route, APIRoute) and route.path == path and method.upper() in route.methods:
            needs = _permissions(route)
            for role, name in ROLE_USERS.items():
                if all(allowed(role, p) for p in needs):
                    return world.bearer(name)
    return world.bearer(ROLE_USERS["auditor"])


# One app on one store for the module: schemathesis reads the schema when the module is collected
# (its fixture loader does not work with this pytest), so the store is made here and removed after.
_DIR = Path(tempfile.mkdtemp(prefix="shoumi-fuzz-"))
_WORLD = make_world(open_store(_DIR / "collector"))
schema = schemathesis.openapi.from_asgi("/openapi.json", _WORLD.app, headers=_WORLD.bearer(ROLE_USERS["auditor"]))


@pytest.fixture(scope="module")
def fuzz_world() -> Iterator[World]:
    try:
        yield _WORLD
    finally:
        _WORLD.store.close()
        shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_route_answers_5xx(case: Any, fuzz_world: World) -> None:
    headers = _token_for(fuzz_world, case.method, case.path)
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:500])
    if response.status_code >= 400 and re.search(r"json", response.headers.get("content-type", [""])[0]
                                                 if isinstance(response.headers.get("content-type"), list)
                                                 else response.headers.get("content-type", "")):
        assert "Traceback" not in response.text and "sqlalchemy" not in response.text.lower()
