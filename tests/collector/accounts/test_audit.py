"""The audit log: append-only (triggers), hash-chained (verify names the first broken row), never forked by
two collectors, read by auditors through filters, pages and a streamed export that is itself audited."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from collector.audit.models import AuditEntry
from collector.storage import open_store
from collector.transparency import load_or_create_tree_key
from collector.verify import audit_chain_findings

from tests.collector.accounts.conftest import World
from tests.collector.evidence_helpers import run_sql, verify_dir
from tests.conftest import fresh_pg_schema, pg_url


def _data_dir_with_audit(tmp_path: Path, n: int = 6) -> Path:
    data_dir = tmp_path / "collector"
    store = open_store(data_dir)
    load_or_create_tree_key(data_dir)
    with store.transaction() as tx:
        for i in range(n):
            tx.append_audit(AuditEntry(1000 + i, f"user{i}", "thing.do", f"target{i}", {"n": i, "名": "值"}))
    store.close()
    return data_dir


def _behind_the_back(db: Path, *statements: str) -> None:
    """Someone with the database file: drops the append-only triggers first, then edits."""
    run_sql(db, ("DROP TRIGGER audit_log_no_update", ()), ("DROP TRIGGER audit_log_no_delete", ()),
            *((s, ()) for s in statements))


def test_an_intact_log_verifies(tmp_path: Path) -> None:
    report = verify_dir(_data_dir_with_audit(tmp_path))
    assert report.ok, report.render()
    assert report.audit_rows == 6 and "6 audit rows" in report.render()


@pytest.mark.parametrize(("edit", "check", "row"), [
    ("UPDATE audit_log SET actor = 'someone else' WHERE id = 3", "audit.row", 3),
    ("UPDATE audit_log SET details = '{\"n\":99,\"名\":\"值\"}' WHERE id = 4", "audit.row", 4),
    ("UPDATE audit_log SET details = 'not json' WHERE id = 2", "audit.row", 2),
    ("DELETE FROM audit_log WHERE id = 3", "audit.chain", 4),
    ("DELETE FROM audit_log WHERE id >= 5", "audit.head", 4),
])
def test_verify_names_the_first_broken_row(tmp_path: Path, edit: str, check: str, row: int) -> None:
    data_dir = _data_dir_with_audit(tmp_path)
    _behind_the_back(data_dir / "collector.db", edit)
    report = verify_dir(data_dir)
    assert not report.ok
    [finding] = [f for f in report.findings if f.check.startswith("audit.")]
    assert (finding.check, finding.row_id) == (check, row), report.render()
    assert f"FAIL {check}" in report.render()


def test_a_rewritten_row_with_its_own_hash_recomputed_still_breaks_the_next_link(tmp_path: Path) -> None:
    from collector.audit.models import audit_row_hash, canonical_details

    data_dir = _data_dir_with_audit(tmp_path)
    store = open_store(data_dir)
    with store.read() as tx:
        [r] = [r for r in tx.audit_rows(after_id=0, limit=10) if r.id == 2]
    store.close()
    forged = audit_row_hash(r.prev_hash, r.at_ns, "mallory", r.action, r.target, canonical_details(json.loads(r.details)))
    _behind_the_back(data_dir / "collector.db", f"UPDATE audit_log SET actor = 'mallory', row_hash = '{forged}' WHERE id = 2")
    [finding] = [f for f in verify_dir(data_dir).findings if f.check.startswith("audit.")]
    assert (finding.check, finding.row_id) == ("audit.chain", 3)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "collector")
        return
    with fresh_pg_schema() as schema:
        yield pg_url(schema)


def test_the_database_refuses_to_change_or_delete_audit_rows(sql_url: str) -> None:
    store = open_store(sql_url)
    try:
        with store.transaction() as tx:
            tx.append_audit(AuditEntry(1, "ana", "x", "t", {}))
        for statement in ("UPDATE audit_log SET actor = 'eve'", "DELETE FROM audit_log"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                with store.transaction() as tx:
                    tx._conn.execute(sa.text(statement))
        with store.read() as tx:
            assert [e.actor for e in tx.list_audit(cursor=None, limit=5).items] == ["ana"]
    finally:
        store.close()


def test_two_collectors_appending_at_once_never_fork_the_chain(sql_url: str) -> None:
    stores = [open_store(sql_url), open_store(sql_url)]
    errors: list[BaseException] = []

    def append(store: Any, who: str) -> None:
        try:
            for i in range(40):
                with store.transaction() as tx:
                    tx.append_audit(AuditEntry(i, who, "race", str(i), {"i": i}))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(s, f"collector{n}")) for n, s in enumerate(stores) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        with stores[0].read() as tx:
            count, findings = audit_chain_findings(tx)
            head = tx.audit_head()
        assert findings == [] and count == 160 and head is not None and head.count == 160
    finally:
        for s in stores:
            s.close()


def test_auditors_filter_page_and_export_and_the_export_is_audited(world: World) -> None:
    with world.store.transaction() as tx:
        for i in range(7):
            tx.append_audit(AuditEntry(world.clock.now + i * 10**9, "ana", "case.comment", f"case:{i % 2}", {"i": i}))
        tx.append_audit(AuditEntry(world.clock.now + 50 * 10**9, "=cmd|' /C calc'!A0", "login.failed", "x", {}))
    c, aud = world.client(), world.bearer("aud")
    page = c.get("/api/v1/audit", params={"actor": "ana", "action": "case.comment", "target": "case:1", "limit": 2},
                 headers=aud).json()
    assert [e["details"]["i"] for e in page["items"]] == [5, 3] and page["next_cursor"]
    rest = c.get("/api/v1/audit", params={"actor": "ana", "action": "case.comment", "target": "case:1",
                                          "cursor": page["next_cursor"]}, headers=aud).json()
    assert [e["details"]["i"] for e in rest["items"]] == [1] and rest["next_cursor"] is None
    item = page["items"][0]
    assert len(item["row_hash"]) == 64 and len(item["prev_hash"]) == 64 and item["at"].endswith("Z")
    from collector.web.timefmt import format_ns

    since = c.get("/api/v1/audit", params={"since": format_ns(world.clock.now + 5 * 10**9), "action": "case.comment"},
                  headers=aud).json()["items"]
    assert [e["details"]["i"] for e in since] == [6, 5]
    assert c.get("/api/v1/audit", params={"since": "yesterday"}, headers=aud).status_code == 400
    assert c.get("/api/v1/audit", params={"cursor": "¹"}, headers=aud).status_code == 400
    assert c.get("/api/v1/audit", headers=world.bearer("ivan")).status_code == 403

    lines = c.get("/api/v1/audit/export", params={"format": "jsonl", "action": "case.comment"}, headers=aud)
    assert lines.status_code == 200 and lines.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(x) for x in lines.text.splitlines()]
    assert [r["details"]["i"] for r in rows] == list(range(7))  # oldest first, the chain's order
    table = c.get("/api/v1/audit/export", params={"format": "csv"}, headers=aud)
    parsed = list(csv.reader(io.StringIO(table.text)))
    assert parsed[0][:5] == ["id", "at", "at_ns", "actor", "action"]
    assert any(r[3] == "'=cmd|' /C calc'!A0" for r in parsed[1:])  # a formula stays text in a spreadsheet
    exports = [e for e in world.audit() if e.action == "audit.export"]
    assert [e.details["format"] for e in exports] == ["csv", "jsonl"]
    assert exports[1].details["filter"] == {"action": "case.comment"} and exports[0].actor == "aud"
    assert c.get("/api/v1/audit/export", params={"format": "xml"}, headers=aud).status_code == 400


def test_the_audit_page_shows_filters_and_entries(world: World) -> None:
    from tests.collector.accounts.conftest import sign_in

    c = world.client()
    sign_in(c, "aud")
    page = c.get("/audit", params={"action": "login"})
    assert page.status_code == 200 and "审计日志" in page.text and "<code>login</code>" in page.text
    assert 'href="/api/v1/audit/export?format=csv&amp;action=login"' in page.text
    analyst = world.client()
    sign_in(analyst, "ana")
    assert analyst.get("/audit").status_code == 403


def test_events_list_audits_only_the_validated_filter_capped(world: World) -> None:
    c = world.client()
    reply = c.get("/api/v1/events", params={"kind": "file.read", "junk": "x" * 20000}, headers=world.bearer("ana"))
    assert reply.status_code == 200
    entry = world.audit(1)[0]
    assert (entry.action, dict(entry.details)) == ("events.list", {"kind": "file.read"})
    assert c.get("/api/v1/events", params={"cursor": "¹"}, headers=world.bearer("ana")).status_code == 400
    assert c.get("/api/v1/events", params={"cursor": "١٢"}, headers=world.bearer("ana")).status_code == 400


def test_rows_of_a_store_from_before_the_chain_are_chained_by_the_upgrade(sql_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from collector.storage.sql import store as sql_store

    url = sql_url if "://" in sql_url else f"sqlite:///{Path(sql_url) / 'collector.db'}"
    if "://" not in sql_url:
        Path(sql_url).mkdir(parents=True)
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a store as the release before accounts left it, with its audit rows
        cfg = Config()
        cfg.set_main_option("script_location", str(sql_store._MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        for i in range(3):
            conn.execute(sa.text("INSERT INTO audit_log (at_ns, actor, action, target, details) VALUES "
                                 "(:t, 'cli:root', 'user.create', :u, :d)"),
                         {"t": i, "u": f"u{i}", "d": json.dumps({"role": "hr", "名": i}, sort_keys=True)})
    engine.dispose()
    store = open_store(sql_url)
    try:
        with store.transaction() as tx:
            tx.append_audit(AuditEntry(9, "ana", "login", "ana", {}))
        with store.read() as tx:
            count, findings = audit_chain_findings(tx)
            assert [e.target for e in tx.list_audit(cursor=None, limit=9).items] == ["ana", "u2", "u1", "u0"]
        assert (count, findings) == (4, [])
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with store.transaction() as tx:
                tx._conn.execute(sa.text("DELETE FROM audit_log"))
    finally:
        store.close()


def test_hostile_text_gets_a_4xx_on_postgresql_too(sql_url: str) -> None:
    from tests.collector.accounts.conftest import make_world, sign_in

    store = open_store(sql_url)
    try:
        w = make_world(store)
        c = w.client()
        assert sign_in(c, "ana\x00' OR 1=1 --", "x").status_code == 401  # PostgreSQL refuses NUL: never looked up
        assert c.get("/api/v1/audit", params={"actor": "a\x00b"}, headers=w.bearer("aud")).status_code == 400
        assert c.get("/api/v1/users/a%00b", headers=w.bearer("ivan")).status_code == 404
        assert c.post("/api/v1/users", json={"username": "x\x00", "role": "hr"}, headers=w.bearer("ivan")).status_code == 400
    finally:
        store.close()
