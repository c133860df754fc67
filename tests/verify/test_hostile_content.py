"""A bundle whose manifest verifies can still be hostile (whoever holds a key can seal anything): any JSON
in place of any member is named (exit 1), never a traceback."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from collector.transparency import load_tree_key
from shoumi_verify.check import Failed, verify_bundle

from tests.collector.evidence.world import build_case, export
from tests.verify.tamper import reseal

JSON_MEMBERS = ["case.json", "events.json", "batches.json", "tree/heads.json", "tree/inclusion.json",
                "tree/consistency.json", "witness/cosignatures.json", "witness/keys.json", "keys/agents.json",
                "audit.json"]
_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                     | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                     max_leaves=12)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, bytes], Any]]:
    w = build_case(tmp_path_factory.mktemp("content") / "collector", batches=2)
    try:
        yield export(w).members, load_tree_key(w.data_dir)
    finally:
        w.store.close()


def _mutate(doc: Any, path: list[Any], value: Any) -> Any:
    """Replaces the value at ``path`` inside ``doc`` (as far as the path exists) with ``value``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, list) and doc:
        i = head % len(doc) if isinstance(head, int) else 0
        return [(_mutate(x, rest, value) if j == i else x) for j, x in enumerate(doc)]
    if isinstance(doc, dict) and doc:
        keys = sorted(doc)
        k = keys[head % len(keys)] if isinstance(head, int) else keys[0]
        return {**doc, k: _mutate(doc[k], rest, value)}
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(member=st.sampled_from(JSON_MEMBERS), path=st.lists(st.integers(0, 50), max_size=4), value=_json)
def test_any_json_anywhere_is_named_not_a_crash(sealed: tuple[dict[str, bytes], Any], member: str, path: list[int],
                                                value: Any) -> None:
    members, key = sealed
    doc = _mutate(json.loads(members[member]), path, value)
    changed = reseal({**members, member: json.dumps(doc).encode()}, key)
    try:
        verify_bundle(changed, lang="en")
    except Failed as exc:
        assert exc.code, exc


def test_deeply_nested_json_is_named(sealed: tuple[dict[str, bytes], Any]) -> None:
    members, key = sealed
    changed = reseal({**members, "events.json": b"[" * 200_000 + b"]" * 200_000}, key)
    with pytest.raises(Failed) as caught:
        verify_bundle(changed)
    assert caught.value.code == "member.invalid" and caught.value.detail["path"] == "events.json"
