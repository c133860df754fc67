"""The policy API and pages on a real SQLite store: create, version, refuse, assign, diff, per-agent view, forms."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.events.models import StoredEvent
from collector.fleet.models import AgentRecord
from collector.policy.delivery import PolicyDelivery
from collector.storage import open_store

from tests.collector.accounts.conftest import World, csrf_of, make_world, sign_in

GOOD = 'sensitive_folders = ["/srv/finance"]\n'


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = open_store(tmp_path / "collector")
    try:
        w = make_world(store)
        w.app.state.policies = PolicyDelivery(store, Ed25519PrivateKey.generate())
        yield w
    finally:
        store.close()


def _enroll(w: World, agent_id: str, *labels: str) -> None:
    with w.store.transaction() as tx:
        tx._conn.exec_driver_sql(
            "INSERT INTO agents (agent_id, public_key, hostname, os, agent_version, enrolled_at_ns, liveness) "
            "VALUES (?, ?, ?, 'Linux', '0.1.0', 1, 'active')", (agent_id, b"k" * 32, f"{agent_id}.corp"))
        if labels:
            tx.set_agent_labels(agent_id=agent_id, labels=sorted(labels))


def test_it_creates_versions_and_the_auditor_reads_them(world: World) -> None:
    client, it, aud = world.client(), world.bearer("ivan"), world.bearer("aud")
    made = client.post("/api/v1/policies", json={"name": "finance", "document": GOOD, "comment": "first"}, headers=it)
    assert made.status_code == 201 and made.json()["version"] == 1 and len(made.json()["sha256"]) == 64
    again = client.post("/api/v1/policies", json={"name": "finance", "document": GOOD}, headers=it)
    assert again.status_code == 409
    second = client.post("/api/v1/policies/finance/versions",
                         json={"document": GOOD + 'destinations = ["/media"]\n', "comment": "usb"}, headers=it)
    assert second.status_code == 201 and second.json()["version"] == 2
    same = client.post("/api/v1/policies/finance/versions", json={"document": GOOD + 'destinations = ["/media"]\n'},
                       headers=it)
    assert same.status_code == 200 and same.json()["new"] is False and same.json()["version"] == 2
    assert [v["version"] for v in client.get("/api/v1/policies/finance/versions", headers=aud).json()["items"]] == [2, 1]
    assert client.get("/api/v1/policies/finance/versions/1", headers=aud).json()["document"] == GOOD
    diff = client.get("/api/v1/policies/finance/diff?from=1&to=2", headers=aud).json()["diff"]
    assert '+destinations = ["/media"]' in diff
    assert client.post("/api/v1/policies", json={"name": "x", "document": GOOD}, headers=aud).status_code == 403
    assert client.get("/api/v1/policies", headers=world.bearer("ana")).status_code == 403  # security: no configuration
    actions = [(e.action, e.target) for e in world.audit() if e.action.startswith("policy.")]
    assert actions == [("policy.version", "finance"), ("policy.version", "finance")]


@pytest.mark.parametrize("document, key", [
    ('sensitive_folders = ["/srv/[finance"]\n', "sensitive_folders"),
    ('sensitive_folders = ["/*"]\n', "sensitive_folders"),
    ('destinations = ["/media"]\n', "sensitive_folders"),  # names no folder
    ("sensitive_folders = [" + ", ".join(f'"/srv/d{i}"' for i in range(5_000)) + "]\n", "sensitive_folders"),
])
def test_a_policy_the_agent_would_refuse_is_422_naming_the_key(world: World, document: str, key: str) -> None:
    got = world.client().post("/api/v1/policies", json={"name": "finance", "document": document},
                              headers=world.bearer("ivan"))
    assert got.status_code == 422, got.text
    assert got.json()["key"] == key and "agent would refuse" in got.json()["detail"]
    assert world.client().get("/api/v1/policies/finance", headers=world.bearer("ivan")).status_code == 404


def test_a_folder_list_of_100000_entries_is_refused_for_its_size(world: World) -> None:
    document = "sensitive_folders = [" + ", ".join(f'"/srv/d{i}"' for i in range(100_000)) + "]\n"
    got = world.client().post("/api/v1/policies", json={"name": "finance", "document": document},
                              headers=world.bearer("ivan"))
    assert got.status_code == 400 and "at most 1048576 characters" in got.json()["detail"]


def test_assignment_by_label_and_the_agents_view(world: World) -> None:
    client, it = world.client(), world.bearer("ivan")
    _enroll(world, "ws-fin", "dept:finance")
    _enroll(world, "ws-hr", "dept:hr")
    client.post("/api/v1/policies", json={"name": "finance", "document": GOOD}, headers=it)
    bad = client.put("/api/v1/policies/finance/assignment", json={"labels": ["Bad Label"]}, headers=it)
    assert bad.status_code == 422 and bad.json()["key"] == "labels"
    assert client.put("/api/v1/policies/nope/assignment", json={"labels": ["a"]}, headers=it).status_code == 404
    done = client.put("/api/v1/policies/finance/assignment", json={"labels": ["dept:finance"], "priority": 5},
                      headers=it)
    assert done.status_code == 200 and done.json()["labels"] == ["dept:finance"]
    delivery = world.app.state.policies
    assert delivery.pending("ws-fin") is not None and delivery.pending("ws-hr") is None  # refreshed at once
    view = client.get("/api/v1/agents/ws-fin/policy", headers=world.bearer("aud")).json()
    assert view["assigned"]["name"] == "finance" and view["assigned"]["label"] == "dept:finance"
    assert view["applied"] is None and view["in_sync"] is False
    with world.store.transaction() as tx:
        delivery.observe(tx, "ws-fin", [StoredEvent("ws-fin", 1, 1, "e1", "policy.applied", 5, attributes={
            "name": "finance", "version": 1, "sha256": view["assigned"]["sha256"], "source": "collector"})])
    view = client.get("/api/v1/agents/ws-fin/policy", headers=it).json()
    assert view["in_sync"] is True and view["applied_known"] is True and view["applied"]["version"] == 1
    listed = client.get("/api/v1/policies", headers=it).json()["items"]
    assert [(p["name"], p["labels"], p["assigned_agents"], p["applied_latest"]) for p in listed] == [
        ("finance", ["dept:finance"], 1, 1)]
    assert client.get("/api/v1/agents/nobody/policy", headers=it).status_code == 404


def test_the_pages_edit_by_form_and_by_toml_and_show_refusals(world: World) -> None:
    client = world.client()
    sign_in(client, "ivan")
    csrf = csrf_of(client, "/policies")
    made = client.post("/policies", data={"csrf_token": csrf, "name": "finance", "document": GOOD, "comment": "c"},
                       follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"] == "/policies/finance"
    page = client.get("/policies/finance")
    assert page.status_code == 200 and 'name="sensitive_folders"' in page.text and "/srv/finance" in page.text
    form = {"csrf_token": csrf, "sensitive_folders": "/srv/finance\n/home/*/Contracts", "destinations": "/media",
            "removable_mounts": "", "exclude_paths": "*.tmp", "exclude_processes": "", "max_hash_bytes": "1048576",
            "partial_match_share": "0.5", "comment": "by form"}
    assert client.post("/policies/finance/form", data=form, follow_redirects=False).status_code == 303
    v2 = client.get("/api/v1/policies/finance", headers=world.bearer("ivan")).json()
    assert v2["version"] == 2 and '"/home/*/Contracts"' in v2["document"] and "max_hash_bytes = 1048576" in v2["document"]
    refused = client.post("/policies/finance/toml", data={"csrf_token": csrf, "document": 'sensitive_folders = ["/"]',
                                                           "comment": ""})
    assert refused.status_code == 422 and "sensitive_folders" in refused.text
    assert 'sensitive_folders = [&#34;/&#34;]' in refused.text or "sensitive_folders = [&quot;/&quot;]" in refused.text
    ok = client.post("/policies/finance/toml", data={"csrf_token": csrf, "document": GOOD, "comment": "back"},
                     follow_redirects=False)
    assert ok.status_code == 303
    assigned = client.post("/policies/finance/assign", data={"csrf_token": csrf, "labels": "dept:finance, site:sh",
                                                             "priority": "3"}, follow_redirects=False)
    assert assigned.status_code == 303
    listing = client.get("/policies")
    assert "dept:finance" in listing.text and "v3" in listing.text
    shown = client.get("/policies/finance?version=2")
    assert shown.status_code == 200 and "/home/*/Contracts" in shown.text
    assert client.get("/policies/nope").status_code == 404


def test_the_auditor_sees_the_pages_without_the_editors(world: World) -> None:
    it = world.client()
    sign_in(it, "ivan")
    it.post("/policies", data={"csrf_token": csrf_of(it, "/policies"), "name": "finance", "document": GOOD})
    aud = world.client("10.0.0.2")
    sign_in(aud, "aud")
    page = aud.get("/policies/finance")
    assert page.status_code == 200 and 'action="/policies/finance/form"' not in page.text
    assert aud.get("/policies").status_code == 200
