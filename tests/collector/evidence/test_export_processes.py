"""A case built by real processes (collector, agent, witness), exported with the CLI and checked with the
console script: it verifies (exit 0); every member with a byte flipped, an event removed, two reordered,
the tree head swapped and a cosignature dropped each fail (exit 1) naming the cause."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from collector.transparency import load_or_create_tree_key, load_tree_key, tree_public_key
from shoumi_verify.archive import read_members
from shoumi_verify.check import Trust

from tests.e2e.conftest import Collector, eventually, run, stop, tool
from tests.verify.tamper import edit_json, failure, flip, reseal, zip_bytes
from tests.verify.test_witness import WitnessProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("export")
    data_dir = tmp / "collector"
    data_dir.mkdir(mode=0o700)
    log_key = tree_public_key(load_or_create_tree_key(data_dir))  # the key serve would make on its first start
    (tmp / "witness").mkdir()
    witness = WitnessProcess(tmp / "witness", log_key).start()
    env_before = dict(os.environ)
    os.environ["SHOUMI_COLLECTOR_TREE_HEAD_SECONDS"] = "0.5"
    os.environ["SHOUMI_COLLECTOR_WITNESSES"] = json.dumps(
        [{"name": witness.name, "url": witness.url, "public_key": witness.public_key.hex()}])
    collector = Collector(data_dir)
    agent = None
    try:
        collector.start("--read-burst-threshold", "5", "--read-burst-window-minutes", "1")
        collector.cli("user", "create", "--username", "ana", "--role", "security_analyst", "--password-stdin",
                      stdin="a long enough password\n")
        token = collector.cli("api-token", "create", "--username", "ana")
        state = tmp / "agent"
        collector.enroll_agent(state)
        watch = tmp / "design"
        watch.mkdir()
        with open(tmp / "agent.log", "ab") as log:
            agent = subprocess.Popen([tool("shoumi-agent"), "run", "--state-dir", str(state), "--watch", str(watch),
                                      "--attributed-user", "alice", "--capture", "inotify"],
                                     stdout=log, stderr=subprocess.STDOUT)
        eventually(lambda: any(e["kind"] == "agent.start" for e in collector.events(token)), timeout=30,
                   what="agent.start")
        for i in range(8):
            (watch / f"plan-{i}.dwg").write_text(f"drawing {i}")
        for i in range(8):
            subprocess.run(["cat", str(watch / f"plan-{i}.dwg")], stdout=subprocess.DEVNULL, check=True)
        alerts = eventually(lambda: [a for a in collector.get("/api/v1/alerts", token)["items"]
                                     if a["rule"] == "read_burst"], timeout=30, what="a read-burst alert")
        auth = {"Authorization": f"Bearer {token}"}
        case = httpx.post(collector.http + "/api/v1/cases", headers=auth, timeout=10,
                          json={"alert_ids": [alerts[0]["id"]], "title": "设计图纸外传"})
        assert case.status_code == 201, case.text
        case_id = case.json()["id"]
        att = httpx.post(f"{collector.http}/api/v1/cases/{case_id}/attachments", headers=auth, timeout=10,
                         files={"file": ("鉴定报告.pdf", "损失鉴定".encode(), "application/pdf")})
        assert att.status_code == 201, att.text
        time.sleep(1.5)  # a tree head or two more, cosigned
        stop(agent)
        assert collector.stop() == 0
        out = tmp / "bundle.zip"
        sha = run(tool("shoumi-collector"), "case", "export", str(case_id), "--out", str(out),
                  "--data-dir", str(data_dir)).stdout.strip()
        key_file = tmp / "auditor.pub"
        key_file.write_text(witness.public_key.hex() + "\n")
        yield {"bundle": out, "sha256": sha, "witness_key": key_file, "witness_public": witness.public_key,
               "data_dir": data_dir, "tmp": tmp, "case_id": case_id}
    finally:
        if agent is not None:
            stop(agent)
        if collector.proc is not None and collector.proc.poll() is None:
            collector.stop()
        witness.stop()
        os.environ.clear()
        os.environ.update(env_before)


def _verify(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("shoumi-verify"), str(path), *extra], capture_output=True, text=True, timeout=120)


def test_the_exported_bundle_verifies_with_the_witness_key(made: dict[str, Any]) -> None:
    done = _verify(made["bundle"], "--witness-key", str(made["witness_key"]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "结论：全部验证通过" in done.stdout and "见证者副署验证通过" in done.stdout
    members = read_members(made["bundle"])
    assert json.loads(members["witness/cosignatures.json"]), "the witness cosigned the bundle's heads"
    events = json.loads(members["events.json"])
    assert len(events) >= 5 and {e["kind"] for e in events} == {"file.read"}
    assert any(p.startswith("attachments/") for p in members)


def test_a_head_kept_with_the_cli_relates_to_the_bundle(made: dict[str, Any]) -> None:
    kept = made["tmp"] / "kept-head.json"
    kept.write_text(run(tool("shoumi-collector"), "tree-head", "--data-dir", str(made["data_dir"])).stdout)
    done = _verify(made["bundle"], "--tree-head", str(kept), "--lang", "en")
    assert done.returncode == 0 and "The tree head given with --tree-head" in done.stdout, done.stdout
    none = run(tool("shoumi-collector"), "tree-head", "--size", "999999", "--data-dir", str(made["data_dir"]),
               check=False)
    assert none.returncode == 2 and "no signed tree head of 999999 leaves" in none.stderr


def test_the_tree_key_printed_by_the_cli_is_the_one_the_bundle_was_signed_with(made: dict[str, Any]) -> None:
    key = run(tool("shoumi-collector"), "tree-head", "--public-key", "--data-dir", str(made["data_dir"])).stdout.strip()
    assert len(key) == 64 and int(key, 16) >= 0
    done = _verify(made["bundle"], "--collector-key", key, "--lang", "en")
    assert done.returncode == 0, done.stdout + done.stderr
    other = _verify(made["bundle"], "--collector-key", "11" * 32, "--lang", "en")
    assert other.returncode == 1, other.stdout


def test_the_cli_refuses_a_case_that_does_not_exist(made: dict[str, Any]) -> None:
    out = made["tmp"] / "none.zip"
    done = run(tool("shoumi-collector"), "case", "export", "999", "--out", str(out), "--data-dir",
               str(made["data_dir"]), check=False)
    assert done.returncode == 2 and "no case 999" in done.stderr and not out.exists()
    assert not [p for p in made["tmp"].iterdir() if p.name.startswith(".none.zip")]


def test_every_member_of_the_real_bundle_flipped_fails(made: dict[str, Any]) -> None:
    members = read_members(made["bundle"])
    for member in sorted(members):
        changed = dict(members)
        changed[member] = flip(members[member])
        found = failure(changed)
        assert found is not None, member
        if found.code == "member.hash":
            assert found.detail["path"] == member


def test_removing_reordering_swapping_and_dropping_are_named(made: dict[str, Any], tmp_path: Path) -> None:
    members = read_members(made["bundle"])
    key = load_tree_key(made["data_dir"])
    witness = Trust(witness_keys=(made["witness_public"],))
    heads = json.loads(members["tree/heads.json"])

    def latest_for_anchor(doc: Any) -> None:
        top = doc["heads"][-1]
        doc["heads"] = [h for h in doc["heads"] if h["tree_size"] != doc["anchor"]]
        doc["anchor"] = top["tree_size"]

    cases = [
        ("an event removed", edit_json(members, "events.json", lambda d: d.pop(0) and None), "event.missing"),
        ("two events reordered", edit_json(members, "events.json", lambda d: [d[1], d[0], *d[2:]]), "event.order"),
        ("the tree head swapped", edit_json(members, "tree/heads.json", latest_for_anchor), "tree.*"),
        # one of two dropped leaves the other, which still vouches for the history: all of them dropped
        ("the cosignatures dropped", edit_json(members, "witness/cosignatures.json", lambda d: []), "witness.required"),
    ]
    one_dropped = edit_json(members, "witness/cosignatures.json", lambda d: d[1:])
    assert (failure(one_dropped) or pytest.fail("passed")).code == "member.hash"
    if len(heads["heads"]) == 1:
        cases = [c for c in cases if c[0] != "the tree head swapped"]
    for what, changed, code in cases:
        path = tmp_path / "changed.zip"
        path.write_bytes(zip_bytes(changed))
        done = _verify(path, "--lang", "en", "--witness-key", str(made["witness_key"]))
        assert done.returncode == 1 and "[member.hash]" in done.stdout, (what, done.stdout)
        path.write_bytes(zip_bytes(reseal(changed, key)))  # the operator re-signs the manifest
        done = _verify(path, "--lang", "en", "--witness-key", str(made["witness_key"]))
        found = failure(reseal(changed, key), witness)
        assert done.returncode == 1, (what, done.stdout)
        assert found is not None and (found.code == code or found.code.startswith(code.rstrip("*"))), (what, found.code)
        assert f"[{found.code}]" in done.stdout
