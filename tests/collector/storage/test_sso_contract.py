"""Single sign-on on every backend: users found by their provider's subject, pending sign-ins taken once."""

from __future__ import annotations

from typing import Any

import pytest

from collector.people.models import SsoPending, User
from collector.storage import AlreadyExists


def test_a_user_is_found_by_provider_and_subject(any_store: Any) -> None:
    any_store.add_user(User("li.hua", "hr", None, 1, provider="oidc", subject="8f14-e45f"))
    any_store.add_user(User("local", "hr", "hash", 2))
    found = any_store.get_user_by_subject(provider="oidc", subject="8f14-e45f")
    assert found == User("li.hua", "hr", None, 1, provider="oidc", subject="8f14-e45f")
    assert any_store.get_user("li.hua") == found
    assert any_store.get_user_by_subject(provider="ldap", subject="8f14-e45f") is None
    assert any_store.get_user("local").provider is None
    with pytest.raises(AlreadyExists):  # one collector user per person at a provider
        any_store.add_user(User("other", "hr", None, 3, provider="oidc", subject="8f14-e45f"))


def test_a_pending_sign_in_is_taken_once_and_old_ones_are_forgotten(any_store: Any) -> None:
    any_store.add_sso_pending(SsoPending("a" * 64, "oidc", "nonce", "verifier", "/cases", 100))
    any_store.add_sso_pending(SsoPending("b" * 64, "wecom", "n2", "v2", "/", 50))
    assert any_store.take_sso_pending(state_hash="a" * 64) == SsoPending("a" * 64, "oidc", "nonce", "verifier",
                                                                          "/cases", 100)
    assert any_store.take_sso_pending(state_hash="a" * 64) is None
    assert any_store.delete_sso_pending_before(before_ns=60) == 1
    assert any_store.take_sso_pending(state_hash="b" * 64) is None
