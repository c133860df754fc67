"""Login throttling: per (account, address) first, per account more slowly, per address; kept in the
database so collectors sharing it agree; the page and the audit say what happened."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

from collector.people.service import PeopleService, Throttled
from collector.storage import open_store

from tests.collector.accounts.conftest import PASSWORD, Clock, World, light_hasher, sign_in
from tests.conftest import fresh_pg_schema, pg_url


def _fail(world: World, address: str, n: int, username: str = "ana") -> list[int]:
    return [sign_in(world.client(address), username, "wrong password!!").status_code for _ in range(n)]


def test_five_failures_lock_the_pair_with_a_clear_message_and_a_growing_delay(world: World) -> None:
    assert _fail(world, "10.0.0.9", 5) == [401] * 5
    locked = sign_in(world.client("10.0.0.9"), "ana")  # even the right password waits now
    assert locked.status_code == 429 and locked.headers["retry-after"] == "60"
    assert "登录失败次数过多，请 1 分钟后再试" in locked.text
    english = world.client("10.0.0.9")
    english.cookies.set("shoumi_lang", "en")
    assert "too many failed sign-ins, try again in 1 minutes" in sign_in(english, "ana").text
    assert sign_in(world.client("10.0.0.10"), "ana").status_code == 303  # the owner elsewhere is not locked out
    world.clock.advance(61)
    assert _fail(world, "10.0.0.9", 5) == [401] * 5
    again = sign_in(world.client("10.0.0.9"), "ana")
    assert again.status_code == 429 and again.headers["retry-after"] == "120"  # the second lock is twice as long
    world.clock.advance(121)
    assert sign_in(world.client("10.0.0.9"), "ana").status_code == 303
    audit = [(e.action, dict(e.details)) for e in world.audit()]
    locks = [d for a, d in audit if a == "login.locked"]
    assert {"scope": "pair", "minutes": 2, "lockouts": 2} in locks and {"scope": "pair", "minutes": 1, "lockouts": 1} in locks
    assert sum(1 for a, _ in audit if a == "login.failed") == 10


def test_guessing_from_many_addresses_locks_the_account_but_not_its_owners_usual_address(world: World) -> None:
    assert sign_in(world.client("192.168.1.5"), "ana").status_code == 303  # the owner's usual machine
    for i in range(4):
        assert _fail(world, f"203.0.113.{i}", 5) == [401] * 5  # 20 failures, 5 per address
    fresh = sign_in(world.client("203.0.113.200"), "ana")
    assert fresh.status_code == 429 and fresh.headers["retry-after"] == "300"  # account lock: a new address waits
    assert sign_in(world.client("192.168.1.5"), "ana").status_code == 303  # the known address still gets in
    assert sign_in(world.client("203.0.113.200"), "hana").status_code == 303  # other accounts are untouched


def test_one_address_spraying_many_accounts_is_refused(world: World) -> None:
    names = [f"nobody{i}" for i in range(25)]
    for name in names:
        assert _fail(world, "198.51.100.7", 4, username=name) == [401] * 4  # under every pair's limit
    refused = sign_in(world.client("198.51.100.7"), "aud")
    assert refused.status_code == 429  # 100 failures from one address
    assert sign_in(world.client("198.51.100.8"), "aud").status_code == 303


def test_a_failed_sign_in_of_an_unknown_user_keeps_no_typed_text(world: World) -> None:
    typed = "MySecretPassw0rd!"  # a password typed into the user-name field
    sign_in(world.client(), typed, "whatever")
    sign_in(world.client(), typed, "whatever")
    rows = [e for e in world.audit(10) if e.action == "login.failed"]
    assert len(rows) == 2 and rows[0].target == rows[1].target  # the same name: the same short keyed hash
    assert re.fullmatch(r"unknown user #[0-9a-f]{10}", rows[0].target)
    for e in world.audit():
        assert typed not in f"{e.actor} {e.target} {dict(e.details)}"
    with world.store.read() as tx:
        from collector.storage.sql.schema import login_throttle
        keys = [r.key for r in tx._conn.execute(login_throttle.select()).all()]
    assert keys and all(typed not in k for k in keys)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_collectors_sharing_a_database_share_the_counts(backend: str, tmp_path: Path) -> None:
    """Two collector processes (two stores, two services) on one database: failures at one lock the other."""
    with contextlib.ExitStack() as stack:
        location = str(tmp_path / "collector") if backend == "sqlite" else pg_url(stack.enter_context(fresh_pg_schema()))
        stores = [open_store(location), open_store(location)]
        stack.callback(lambda: [s.close() for s in stores])
        clock = Clock()
        one, two = (PeopleService(session_ttl_ns=10**12, clock=clock, hasher=light_hasher()) for _ in range(2))
        with stores[0].transaction() as tx:
            one.create_user(tx=tx, username="ana", role="hr", password=PASSWORD, actor="t")
        for i in range(5):
            service, store = (one, stores[0]) if i % 2 else (two, stores[1])
            with pytest.raises(Exception, match="wrong user name or password"):
                service.sign_in(store=store, username="ana", password="nope nope nope", peer="10.1.1.1")
        with pytest.raises(Throttled) as locked:
            one.sign_in(store=stores[0], username="ana", password=PASSWORD, peer="10.1.1.1")
        assert locked.value.minutes == 1
        with pytest.raises(Throttled):
            two.sign_in(store=stores[1], username="ana", password=PASSWORD, peer="10.1.1.1")


def test_an_ipv6_subscriber_counts_as_one_address_whatever_its_last_64_bits(world: World) -> None:
    for i in range(5):  # rotating through one /64 does not buy more guesses
        assert sign_in(world.client(f"2001:db8:1:2::{i + 1:x}"), "ana", "wrong password!!").status_code == 401
    assert sign_in(world.client("2001:db8:1:2::ffff"), "ana").status_code == 429
    assert sign_in(world.client("2001:db8:1:3::1"), "ana").status_code == 303  # another /64 is another address
