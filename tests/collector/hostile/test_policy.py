"""Hostile policy documents against the API and the agent's parser: deep nesting, pathological globs, 1 MiB of
keys. Each is a 422 naming the reason (never a 500), nothing is saved, and the agent refuses the same."""

from __future__ import annotations

import pytest

from agent.policy import PolicyError, parse_policy_document

from tests.collector.accounts.conftest import World
from tests.collector.policy.test_api import world  # noqa: F401  (the fixture: a collector with policy delivery)

NESTED_ARRAYS = 'sensitive_folders = ["/srv/f"]\nx = ' + "[" * 50_000 + "]" * 50_000 + "\n"
NESTED_TABLES = 'sensitive_folders = ["/srv/f"]\nx = ' + "{a = " * 30_000 + "1" + "}" * 30_000 + "\n"
MANY_KEYS = "".join(f"k{i} = 1\n" for i in range(100_000))[: (1 << 20) - 10]
GLOB_BOMB = 'sensitive_folders = ["/srv/' + "*a" * 2_000 + '"]\nexclude_paths = ["' + "*[!a]" * 2_000 + '"]\n'


@pytest.mark.parametrize("document", [NESTED_ARRAYS, NESTED_TABLES, MANY_KEYS])
def test_a_hostile_document_is_a_422_and_nothing_is_saved(world: World, document: str) -> None:  # noqa: F811
    got = world.client().post("/api/v1/policies", json={"name": "finance", "document": document},
                              headers=world.bearer("ivan"))
    assert got.status_code == 422, got.text[:300]
    assert "Traceback" not in got.text and "/work/" not in got.text
    assert world.client().get("/api/v1/policies/finance", headers=world.bearer("ivan")).status_code == 404


@pytest.mark.parametrize("document", [NESTED_ARRAYS, NESTED_TABLES])
def test_the_agent_refuses_a_deeply_nested_document_with_its_reason(document: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy_document(document)


def test_pathological_globs_are_judged_and_matched_in_bounded_work() -> None:
    """fnmatch's translation of many stars matches without backtracking blow-up (work, not wall time: a match
    against a long path that almost fits finishes in this test at all)."""
    policy = parse_policy_document(GLOB_BOMB)
    assert not policy.is_sensitive("/srv/" + "a" * 3_999 + "b")
    assert policy.is_excluded("/tmp/" + "xb" * 2_000)
