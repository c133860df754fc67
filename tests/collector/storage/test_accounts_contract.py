"""The accounts and audit areas on every backend: users, tokens, throttle counts, service keys, the audit chain."""

from __future__ import annotations

from typing import Any

from collector.audit.models import GENESIS, AuditEntry, AuditFilter, audit_row_hash, canonical_details
from collector.people.models import ThrottleState, User


def test_users_are_listed_and_updated(any_store: Any) -> None:
    any_store.add_user(User("bob", "hr", None, 1))
    any_store.add_user(User("ana", "auditor", "h", 2, lang="en"))
    assert [u.username for u in any_store.list_users()] == ["ana", "bob"]
    assert any_store.get_user("ana").lang == "en" and any_store.get_user("bob").lang == "zh"
    any_store.update_user(User("bob", "hr", "new-hash", 1, disabled=True, lang="en"))
    assert any_store.get_user("bob") == User("bob", "hr", "new-hash", 1, True, "en")


def test_tokens_are_named_listed_touched_and_revoked_per_user(any_store: Any) -> None:
    any_store.add_user(User("ana", "hr", None, 1))
    any_store.add_user(User("bob", "hr", None, 1))
    any_store.add_token(token_hash="a1" * 32, username="ana", kind="api", created_at_ns=10, expires_at_ns=100, name="ci")
    any_store.add_token(token_hash="a2" * 32, username="ana", kind="api", created_at_ns=20, expires_at_ns=None)
    any_store.add_token(token_hash="s1" * 32, username="ana", kind="session", created_at_ns=30, expires_at_ns=99)
    any_store.add_token(token_hash="s2" * 32, username="ana", kind="session", created_at_ns=31, expires_at_ns=99)
    any_store.add_token(token_hash="b1" * 32, username="bob", kind="session", created_at_ns=30, expires_at_ns=99)
    api = any_store.list_tokens(username="ana", kind="api")
    assert [(t.name, t.created_at_ns) for t in api] == [(None, 20), ("ci", 10)]
    assert api[1].id == ("a1" * 32)[:16] and api[1].last_used_ns is None
    any_store.touch_token(token_hash="a1" * 32, now_ns=55)
    assert any_store.get_token(token_hash="a1" * 32).last_used_ns == 55
    assert any_store.get_token(token_hash="zz") is None
    assert any_store.revoke_user_tokens(username="ana", kind="session", keep="s2" * 32) == 1
    assert any_store.get_token(token_hash="s1" * 32).revoked and not any_store.get_token(token_hash="s2" * 32).revoked
    assert any_store.revoke_user_tokens(username="ana") == 3  # the two API tokens and the kept session
    assert not any_store.get_token(token_hash="b1" * 32).revoked  # another user's are untouched


def test_throttle_counts_and_service_keys(any_store: Any) -> None:
    assert any_store.get_throttle(scope="pair", key="k") is None
    any_store.put_throttle(ThrottleState("pair", "k", 3, 100))
    any_store.put_throttle(ThrottleState("pair", "k", 4, 100, 500, 1))
    any_store.put_throttle(ThrottleState("account", "k", 1, 100))
    assert any_store.get_throttle(scope="pair", key="k") == ThrottleState("pair", "k", 4, 100, 500, 1)
    any_store.delete_throttle(scope="pair", key="k")
    assert any_store.get_throttle(scope="pair", key="k") is None
    assert any_store.get_throttle(scope="account", key="k").failures == 1
    assert any_store.get_service_key(name="people.v1") is None
    first = any_store.ensure_service_key(name="people.v1", secret=b"\x01" * 32)
    assert first == b"\x01" * 32 == any_store.ensure_service_key(name="people.v1", secret=b"\x02" * 32)
    assert any_store.get_service_key(name="people.v1") == first


def test_the_audit_log_is_a_hash_chain_the_same_on_every_backend(any_store: Any) -> None:
    entries = [AuditEntry(1000 + i, "ana" if i % 2 else "bob", f"act.{i % 3}", f"t{i}", {"i": i, "名": "值", "l": [1, 2]})
               for i in range(7)]
    for e in entries:
        any_store.append_audit(e)
    rows = any_store.audit_rows(after_id=0, limit=100)
    prev = GENESIS
    for e, r in zip(entries, rows):
        assert r.prev_hash == prev
        assert r.row_hash == audit_row_hash(prev, e.at_ns, e.actor, e.action, e.target, canonical_details(e.details))
        prev = r.row_hash
    assert len(rows) == 7 and [r.id for r in rows] == sorted(r.id for r in rows)
    head = any_store.audit_head()
    assert (head.last_id, head.last_hash, head.count) == (rows[-1].id, rows[-1].row_hash, 7)
    assert any_store.audit_rows(after_id=rows[2].id, limit=2) == rows[3:5]


def test_the_audit_log_is_filtered_and_paged_both_ways(any_store: Any) -> None:
    assert any_store.audit_head() is None
    for i in range(10):
        any_store.append_audit(AuditEntry(100 + i, "ana" if i < 6 else "bob", "x" if i % 2 else "y", f"t{i % 3}", {"i": i}))

    def ids(**kw: Any) -> list[int]:
        return [e.details["i"] for e in any_store.list_audit(cursor=None, limit=100, **kw).items]
    assert ids(filter=AuditFilter(actor="bob")) == [9, 8, 7, 6]
    assert ids(filter=AuditFilter(action="x", target="t0")) == [9, 3]
    assert ids(filter=AuditFilter(since_ns=103, until_ns=106)) == [5, 4, 3]
    assert ids(oldest_first=True, filter=AuditFilter(actor="bob")) == [6, 7, 8, 9]
    first = any_store.list_audit(cursor=None, limit=3, oldest_first=True)
    again = any_store.list_audit(cursor=int(first.next_cursor), limit=3, oldest_first=True)
    assert [e.details["i"] for e in first.items + again.items] == [0, 1, 2, 3, 4, 5]
    newest = any_store.list_audit(cursor=None, limit=4, filter=AuditFilter(actor="ana"))
    older = any_store.list_audit(cursor=int(newest.next_cursor), limit=4, filter=AuditFilter(actor="ana"))
    assert [e.details["i"] for e in newest.items + older.items] == [5, 4, 3, 2, 1, 0] and older.next_cursor is None
    e = newest.items[0]
    assert e.prev_hash is not None and e.row_hash is not None and e.id is not None
