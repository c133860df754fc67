"""An alert's detail (the evidence timeline in time order, paged; where the content went; the agent's health in
that window; the cases holding it) and pseudonyms (stable, collision-safe, the same for every collector on one
database, revealed only with a reason by the roles that need it, audited without the name)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from collector.privacy.codes import code_for, mask, parse
from collector.privacy.service import PrivacyError, pseudonym_of, register, reveal, user_of
from collector.storage import MemoryStore, SqlStore

from tests.collector.alerts.conftest import T0, World
from tests.conftest import fresh_pg_schema, pg_url

EVIDENCE = ("ev-43", "ev-42", "ev-41", "ev-40")  # appended out of time order


def test_the_evidence_timeline_says_who_which_file_which_process_and_where_it_went(world: World) -> None:
    a = world.alert(rule="usb_exfiltration", event_ids=EVIDENCE + ("pruned-1",))
    body = world.get("ana", f"/api/v1/alerts/{a.id}").json()
    items = body["evidence"]["items"]
    assert [e["id"] for e in items] == ["ev-43", "ev-40", "ev-41", "ev-42"]  # in time order
    assert body["evidence"]["stored"] == 4 and body["evidence"]["no_longer_stored"] == 1
    alice = world.code("alice")
    copy = next(e for e in items if e["kind"] == "file.copy")
    assert copy["user"] == alice and copy["process"] == {"name": "cp", "exe": "/usr/bin/cp", "pid": 4242}
    assert copy["flow"]["source"] == f"/home/{alice}/finance/q3.xlsx"  # the name in a path is masked too
    assert copy["flow"]["destination"] == f"/home/{alice}/Nutstore/q3.xlsx"
    assert copy["flow"]["match"] == "exact" and copy["flow"]["match_share"] == 1.0
    assert copy["flow"]["read_by_same_process"] is True
    usb = next(e for e in items if e["id"] == "ev-42")
    assert usb["flow"]["source"] == "/srv/finance/plan.xlsx" and usb["flow"]["destination"] == f"/media/{alice}/KINGSTON/plan.zip"
    assert (usb["flow"]["match"], usb["flow"]["match_share"], usb["flow"]["destination_share"]) == ("archive", 0.8734, 0.61)
    assert usb["flow"]["archive_members"] == ["plan.xlsx"] and usb["flow"]["device"] == "/dev/sdb1"
    assert "alice" not in str(body)
    assert body["first_event_at"] == "2025-12-01T00:00:30.000000000Z" and body["cases"] == []


def test_the_evidence_pages_through_thousands(world: World) -> None:
    from collector.events.models import StoredBatch, StoredEvent

    n = 2500
    events = [StoredEvent(agent_id="agt-3", epoch=1, seq=i + 1, id=f"burst-{i}", kind="file.read",
                          time_ns=T0 + (n - i) * 1000, path=f"/srv/finance/{i}.csv", user="alice", attributes={})
              for i in range(n)]
    with world.store.transaction() as tx:
        tx.store_batch(StoredBatch("agt-3", 1, 1, n, b"h" * 32, bytes(32), b"s" * 64, b"c", T0), events,
                       expected_head=None)
    a = world.alert(rule="bulk_read", agent="agt-3", event_ids=tuple(e.id for e in events))
    seen, cursor = [], None
    for _ in range(10):
        page = world.get("ana", f"/api/v1/alerts/{a.id}/evidence", limit=1000,
                         **({"cursor": cursor} if cursor else {})).json()
        seen += [e["time"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == n and seen == sorted(seen)
    assert world.get("ana", f"/api/v1/alerts/{a.id}/evidence", cursor="¹_2").status_code == 400
    assert world.get("ana", "/api/v1/alerts/999999/evidence").status_code == 404


def test_the_agents_health_in_the_window_heartbeats_silences_gaps_and_its_other_alerts(world: World) -> None:
    gap_alert = world.alert(rule="capture_gap", user="", severity="medium", at=T0 + 400 * 10**9)
    a = world.alert(rule="usb_exfiltration", event_ids=EVIDENCE, at=T0 + 120 * 10**9)
    health = world.get("ana", f"/api/v1/alerts/{a.id}").json()["agent"]
    assert health["agent_id"] == "agt-1" and health["liveness"] == "active"
    assert health["hostname"] == f"{world.code('alice')}-laptop"  # a host named after its person is masked
    assert health["heartbeats"] == 15 and health["complete"]
    # heartbeats every 30 s until 270 s, then nothing until 900 s: one silence of 630 s (3 missed = 90 s)
    assert {"from": "2025-12-01T00:04:30.000000000Z", "to": "2025-12-01T00:15:00.000000000Z", "seconds": 630} \
        in health["silences"]
    assert [(g["count"], g["action"]) for g in health["capture_gaps"]] == [(17, "rescan")]
    assert [d["id"] for d in health["delivery_alerts"]] == [gap_alert.id]


def test_the_cases_holding_an_alert_are_linked(world: World) -> None:
    a = world.alert()
    answer = world.post("ana", "/api/v1/cases", {"alert_ids": [a.id], "title": "USB at night"})
    assert answer.status_code == 201, answer.text
    assert world.get("ana", f"/api/v1/alerts/{a.id}").json()["cases"] == [answer.json()["id"]]


def test_codes_are_stable_read_as_typed_and_mask_whole_words_only() -> None:
    secret = b"s" * 32
    code = code_for(secret, "alice")
    assert code == code_for(secret, "alice") and code != code_for(b"t" * 32, "alice") != code_for(secret, "alicf")
    assert code.startswith("P-") and len(code) == 12 and len(code_for(secret, "alice", long=True)) == 22
    assert code_for(secret, "") == ""
    body = code[2:]
    for typed in (code, code.lower(), f"员工-{body}", f"Employee-{body}", f" {body} ", body.replace("0", "O")):
        assert parse(typed) == code, typed
    for wrong in ("P-123", "P-" + "U" * 10, "alice", "", "P-" + body + "X"):
        assert parse(wrong) is None, wrong
    assert mask("alice read /home/alice/x on alice-pc; malice and alice2 stay", "alice", "P-1") == \
        "P-1 read /home/P-1/x on P-1-pc; malice and alice2 stay"


def test_a_collision_gives_the_second_person_the_long_code() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        taken = code_for(tx.pseudonym_secret(), "bob")
        assert tx.add_pseudonym(code=taken, user_name="mallory", now_ns=1)  # as if mallory's code were bob's
        assert register(tx=tx, user_name="bob", now_ns=2) == code_for(tx.pseudonym_secret(), "bob", long=True)
        assert pseudonym_of(tx=tx, user_name="bob") == code_for(tx.pseudonym_secret(), "bob", long=True)
        assert user_of(tx=tx, pseudonym=taken) == "mallory"
        assert register(tx=tx, user_name="bob", now_ns=3) == pseudonym_of(tx=tx, user_name="bob")  # once


@pytest.fixture
def two_collectors() -> Iterator[tuple[SqlStore, SqlStore]]:
    with fresh_pg_schema("p") as schema:
        one, two = SqlStore(sa.create_engine(pg_url(schema))), SqlStore(sa.create_engine(pg_url(schema)))
        try:
            yield one, two
        finally:
            one.close()
            two.close()


@pytest.mark.postgres
def test_every_collector_on_one_database_gives_the_same_pseudonym(two_collectors: tuple[SqlStore, SqlStore]) -> None:
    one, two = two_collectors
    with one.transaction() as tx:
        made = register(tx=tx, user_name="alice", now_ns=1)
    with two.read() as tx:
        assert pseudonym_of(tx=tx, user_name="alice") == made and pseudonym_of(tx=tx, user_name="zoe")
        zoe = pseudonym_of(tx=tx, user_name="zoe")  # never registered: computed from the shared secret
    with one.read() as tx:
        assert pseudonym_of(tx=tx, user_name="zoe") == zoe


def _reveal(world: World, who: str, body: dict[str, Any]) -> Any:
    return world.post(who, "/api/v1/identities/reveal", body)


def test_revealing_a_name_needs_the_permission_and_a_reason_and_is_audited(world: World) -> None:
    world.alert(user="alice")
    code = world.code("alice")
    assert _reveal(world, "aud", {"pseudonym": code, "reason": "auditing the auditors"}).status_code == 403
    assert _reveal(world, "ivan", {"pseudonym": code, "reason": "IT wants to know"}).status_code == 403
    assert world.client.post("/api/v1/identities/reveal", json={"pseudonym": code, "reason": "x" * 20}).status_code == 401
    for reason in ("", "too short", "x" * 501):
        assert _reveal(world, "ana", {"pseudonym": code, "reason": reason}).status_code in (400, 422), reason
    assert _reveal(world, "ana", {"pseudonym": "P-0000000000", "reason": "looking into case 12"}).status_code == 404
    assert _reveal(world, "ana", {"pseudonym": "alice", "reason": "looking into case 12"}).status_code == 422
    before = len(world.audit())
    shown = _reveal(world, "ana", {"pseudonym": code.lower(), "reason": "  looking   into case 12, USB at night "})
    assert shown.status_code == 200 and shown.json()["user"] == "alice"
    assert _reveal(world, "hana", {"pseudonym": code, "reason": "HR confirming case 12"}).json()["user"] == "alice"
    rows = [e for e in world.audit()[before:] if e.action == "identity.reveal"]
    assert [(e.actor, e.target, e.details["reason"]) for e in rows] == [
        ("ana", code, "looking into case 12, USB at night"), ("hana", code, "HR confirming case 12")]
    assert all("alice" not in str(e.details) for e in world.audit() if e.action == "identity.reveal")


def test_reveal_refuses_in_the_service_too() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        code = register(tx=tx, user_name="alice", now_ns=1)
        with pytest.raises(PrivacyError) as exc:
            reveal(tx=tx, pseudonym=code, reason="short", actor="ana", now_ns=2)
        assert exc.value.status == 422
        assert tx.list_audit(cursor=None, limit=10).items == ()  # a refused reveal reveals nothing, writes nothing
