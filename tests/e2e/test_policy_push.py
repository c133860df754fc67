"""Policies pushed by label, end to end with real processes: a collector, two agents enrolled with different labels.

A policy edited through the API reaches the labelled agent only, within a heartbeat or two, and that
agent's next events follow it; a bad glob is refused by the API (422), and the same document pushed
signed (written to the store directly, past the API) is refused by the agent with policy.refused
while the previous policy stays in force; a policy signed with another key than the one the agent
pinned at enrollment (the collector's key file replaced) is refused too.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from shoumi.signed_policy import document_sha256

from tests.e2e.conftest import Collector, eventually, run, stop, tool

HEARTBEAT_S = "1"
WAIT_S = 20.0  # every wait below is bounded: a few heartbeats and the collector's 3 s refresh, with room


def _agent(state: Path, watch: Path) -> subprocess.Popen[bytes]:
    with open(state.parent / f"{state.name}.log", "ab") as log:
        return subprocess.Popen(
            [tool("shoumi-agent"), "run", "--state-dir", str(state), "--watch", str(watch), "--attributed-user", "alice",
             "--capture", "inotify", "--heartbeat-seconds", HEARTBEAT_S],
            stdout=log, stderr=subprocess.STDOUT)


def _enroll(collector: Collector, state: Path, label: str) -> str:
    token = collector.cli("enroll-token", "create", "--label", label)
    return run(tool("shoumi-agent"), "enroll", "--collector", collector.enroll, "--token", token,
               "--ca-fingerprint", collector.fingerprint, "--state-dir", str(state)).stdout.strip()


def _call(collector: Collector, method: str, path: str, token: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(collector.http + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _events_of(collector: Collector, token: str, agent_id: str, kind: str,
               where: Callable[[dict[str, Any]], bool] = lambda e: True) -> list[dict[str, Any]]:
    return [e for e in collector.events(token) if e["agent_id"] == agent_id and e["kind"] == kind and where(e)]


def _insert_version(data_dir: Path, name: str, version: int, document: str) -> None:
    """Writes a version into the collector's store directly, past the API's check (as a tampered store would)."""
    from collector.policy.models import PolicyVersion
    from collector.storage import open_store

    store = open_store(data_dir)
    try:
        with store.transaction() as tx:
            tx.add_policy_version(PolicyVersion(name, version, document, document_sha256(document.encode()),
                                                "bypass", time.time_ns(), "written past the API"))
    finally:
        store.close()


@pytest.mark.slow
def test_a_policy_reaches_the_labelled_agent_only_and_bad_ones_are_refused(collector: Collector,
                                                                           tmp_path: Path) -> None:
    collector.start()
    collector.cli("user", "create", "--username", "ivan", "--role", "it_admin", "--password-stdin",
                  stdin="a long enough password\n")
    collector.cli("user", "create", "--username", "ana", "--role", "security_analyst", "--password-stdin",
                  stdin="a long enough password\n")
    it, ana = collector.cli("api-token", "create", "--username", "ivan"), collector.cli("api-token", "create",
                                                                                        "--username", "ana")
    folders = {name: tmp_path / name for name in ("fin-local", "hr-local", "fin-pushed")}
    for folder in folders.values():
        folder.mkdir()
    fin_id = _enroll(collector, tmp_path / "fin", "dept:finance")
    hr_id = _enroll(collector, tmp_path / "hr", "dept:hr")
    agents = [_agent(tmp_path / "fin", folders["fin-local"]), _agent(tmp_path / "hr", folders["hr-local"])]
    try:
        for agent_id in (fin_id, hr_id):
            eventually(lambda: _events_of(collector, ana, agent_id, "agent.heartbeat"), WAIT_S, f"{agent_id} heartbeat")

        # a bad glob is refused by the API, naming the key; nothing is saved
        status, body = _call(collector, "POST", "/api/v1/policies", it,
                             {"name": "finance", "document": 'sensitive_folders = ["/srv/[finance"]\n'})
        assert status == 422 and body["key"] == "sensitive_folders"

        # the policy edited through the API, assigned to dept:finance
        document = f'sensitive_folders = ["{folders["fin-pushed"]}"]\n'
        status, made = _call(collector, "POST", "/api/v1/policies", it,
                             {"name": "finance", "document": document, "comment": "e2e"})
        assert status == 201 and made["version"] == 1
        assigned_at = time.monotonic()
        seen_before = max(e["seq"] for e in collector.events(ana) if e["agent_id"] == fin_id)
        status, _ = _call(collector, "PUT", "/api/v1/policies/finance/assignment", it,
                          {"labels": ["dept:finance"], "priority": 1})
        assert status == 200
        applied = eventually(lambda: _events_of(collector, ana, fin_id, "policy.applied",
                                                lambda e: e["attributes"].get("name") == "finance"),
                             WAIT_S, "policy.applied from the finance agent")
        took = time.monotonic() - assigned_at
        assert applied[0]["attributes"]["version"] == 1 and applied[0]["attributes"]["sha256"] == made["sha256"]
        assert applied[0]["attributes"]["source"] == "collector"
        print(f"assigned -> policy.applied stored: {took:.1f} s (heartbeat {HEARTBEAT_S} s)")
        # within a heartbeat interval, told by the agent's own stream: the Ack of the next heartbeat's batch
        # carries the policy, and policy.applied follows it (one heartbeat of slack for a batch in flight)
        beats_between = _events_of(collector, ana, fin_id, "agent.heartbeat",
                                   lambda e: seen_before < e["seq"] < applied[0]["seq"])
        assert len(beats_between) <= 2, beats_between
        view = eventually(lambda: (lambda v: v if v["in_sync"] else None)(
            collector.get(f"/api/v1/agents/{fin_id}/policy", it)), WAIT_S, "the finance agent in sync")
        assert view["applied"]["version"] == 1 and view["assigned"]["label"] == "dept:finance"

        # the agent's next events follow it: the pushed folder is watched, the local one no longer
        (folders["fin-pushed"] / "budget.xlsx").write_text("pushed policy's folder")
        eventually(lambda: _events_of(collector, ana, fin_id, "file.create",
                                      lambda e: e["path"].endswith("fin-pushed/budget.xlsx")), WAIT_S,
                   "an event under the pushed folder")
        (folders["fin-local"] / "old.txt").write_text("no longer sensitive")
        (folders["fin-pushed"] / "marker.txt").write_text("after old.txt")
        eventually(lambda: _events_of(collector, ana, fin_id, "file.create",
                                      lambda e: e["path"].endswith("marker.txt")), WAIT_S, "the marker")
        assert not _events_of(collector, ana, fin_id, "file.create", lambda e: e["path"].endswith("fin-local/old.txt"))

        # the other agent was sent nothing: it still runs its local policy
        assert not _events_of(collector, ana, hr_id, "policy.applied", lambda e: e["attributes"].get("name") == "finance")
        hr_view = collector.get(f"/api/v1/agents/{hr_id}/policy", it)
        assert hr_view["assigned"] is None and (hr_view["applied"] or {}).get("name") in (None, "local")

        # the bad glob pushed signed, past the API: the agent refuses it and keeps version 1
        _insert_version(collector.data_dir, "finance", 2, 'sensitive_folders = ["/srv/[finance"]\n')
        refused = eventually(lambda: _events_of(collector, ana, fin_id, "policy.refused",
                                                lambda e: e["attributes"].get("version") == 2), WAIT_S,
                             "policy.refused of version 2")
        assert "sensitive_folders" in refused[0]["attributes"]["reason"]
        view = eventually(lambda: (lambda v: v if (v["refused"] or {}).get("version") == 2 else None)(
            collector.get(f"/api/v1/agents/{fin_id}/policy", it)), WAIT_S, "the refusal recorded")
        assert view["applied"]["version"] == 1 and "sensitive_folders" in view["refused"]["reason"]
        alerts = eventually(lambda: [a for a in collector.get("/api/v1/alerts", ana)["items"]
                                     if a["rule"] == "policy_refused"], WAIT_S, "the policy_refused alert")
        assert len(alerts) == 1 and alerts[0]["agent_id"] == fin_id
        (folders["fin-pushed"] / "still.txt").write_text("version 1 still in force")
        eventually(lambda: _events_of(collector, ana, fin_id, "file.create", lambda e: e["path"].endswith("still.txt")),
                   WAIT_S, "version 1 still followed")

        # a policy signed with another key than the pinned one: the collector's key file replaced
        port = collector.grpc.rpartition(":")[2]
        assert collector.stop() == 0
        (collector.data_dir / "policy-signing.key").unlink()
        collector.start(grpc_listen=f"127.0.0.1:{port}")
        status, third = _call(collector, "POST", "/api/v1/policies/finance/versions", it,
                              {"document": document + 'exclude_processes = ["backup"]\n', "comment": "new key"})
        assert status == 201 and third["version"] == 3
        refused = eventually(lambda: _events_of(collector, ana, fin_id, "policy.refused",
                                                lambda e: e["attributes"].get("version") == 3), 2 * WAIT_S,
                             "policy.refused of version 3")
        assert "signature" in refused[0]["attributes"]["reason"]
        view = eventually(lambda: (lambda v: v if (v["refused"] or {}).get("version") == 3 else None)(
            collector.get(f"/api/v1/agents/{fin_id}/policy", it)), WAIT_S, "the second refusal recorded")
        assert view["applied"]["version"] == 1
    finally:
        for agent in agents:
            stop(agent)
