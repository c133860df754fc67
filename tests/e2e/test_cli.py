"""The thin path with real processes: serve, enroll, run, file operations, API and page."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Collector, eventually, run, stop, tool

ROOT = Path(__file__).resolve().parents[2]


def _agent(state: Path, watch: Path, *extra: str, capture: str = "inotify") -> subprocess.Popen[bytes]:
    with open(state.parent / f"{state.name}.log", "ab") as log:
        return subprocess.Popen(
            # inotify capture by default: a known attribution (fanotify is covered by test_capture.py)
            [tool("shoumi-agent"), "run", "--state-dir", str(state), "--watch", str(watch), "--attributed-user", "alice",
             "--capture", capture, *extra],
            stdout=log, stderr=subprocess.STDOUT,
        )


def _setup(collector: Collector, tmp_path: Path) -> tuple[str, Path]:
    collector.cli("user", "create", "--username", "ana", "--role", "security_analyst", "--password-stdin",
                  stdin="a long enough password\n")
    token = collector.cli("api-token", "create", "--username", "ana")
    enroll = collector.cli("enroll-token", "create")
    assert enroll.startswith("se_") and "\n" not in enroll
    agent_id = run(tool("shoumi-agent"), "enroll", "--collector", collector.enroll, "--token", enroll,
                   "--ca-fingerprint", collector.fingerprint, "--state-dir", str(tmp_path / "agent")).stdout.strip()
    assert agent_id.startswith("agt-")
    reused = run(tool("shoumi-agent"), "enroll", "--collector", collector.enroll, "--token", enroll,
                 "--ca-fingerprint", collector.fingerprint, "--state-dir", str(tmp_path / "agent2"), check=False)
    assert reused.returncode == 2 and "token is used" in reused.stderr
    return token, tmp_path / "agent"


@pytest.mark.slow
def test_file_operations_become_stored_events_and_an_alert(collector: Collector, tmp_path: Path) -> None:
    collector.start("--read-burst-threshold", "10", "--read-burst-window-minutes", "1")
    token, state = _setup(collector, tmp_path)
    watch = tmp_path / "finance"
    watch.mkdir()
    # As root the agent sees reads through fanotify, which tells its own reads (hashing what was just
    # written) from the user's by pid; inotify cannot, and merges an identical open/close pair of
    # the agent's and the user's, so an exact count of reads is only asserted under fanotify.
    fanotify = os.geteuid() == 0
    agent = _agent(state, watch, capture="auto" if fanotify else "inotify")
    reader = pwd.getpwuid(os.geteuid()).pw_name if fanotify else "alice"
    try:
        eventually(lambda: any(e["kind"] == "agent.start" for e in collector.events(token)), what="agent.start")
        for i in range(12):
            (watch / f"plan-{i}.txt").write_text(f"secret {i}")
        for i in range(12):
            subprocess.run(["cat", str(watch / f"plan-{i}.txt")], stdout=subprocess.DEVNULL, check=True)
        os.rename(watch / "plan-0.txt", watch / "plan-zero.txt")
        os.unlink(watch / "plan-1.txt")
        events = eventually(
            lambda: (lambda ev: ev if sum(e["kind"] == "file.delete" for e in ev) else None)(collector.events(token)),
            what="the delete to be stored",
        )
        kinds = [e["kind"] for e in events]
        assert kinds.count("file.create") == 12 and kinds.count("file.write") == 12
        assert kinds.count("file.read") == 12 if fanotify else 10 <= kinds.count("file.read") <= 12
        moved = next(e for e in events if e["kind"] == "file.move")
        assert moved["path"].endswith("plan-0.txt") and moved["dest_path"].endswith("plan-zero.txt")
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        alerts = eventually(lambda: collector.get("/api/v1/alerts", token)["items"], what="an alert")
        assert alerts[0]["rule"] == "read_burst" and alerts[0]["user"].startswith("P-")  # a pseudonym by default
        req = urllib.request.Request(collector.http + "/api/v1/identities/reveal", method="POST",
                                     data=json.dumps({"pseudonym": alerts[0]["user"], "reason": "e2e: whose reads were these"}).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as reply:
            assert json.load(reply)["user"] == reader  # revealed with a reason, for a role that may
    finally:
        assert stop(agent) == 0
    stored = collector.events(token)
    assert stored[-1]["kind"] == "agent.stop"  # a graceful stop is signed and delivered
    assert collector.stop() == 0


@pytest.mark.slow
def test_collector_down_then_back_loses_nothing(collector: Collector, tmp_path: Path) -> None:
    collector.start()
    token, state = _setup(collector, tmp_path)
    grpc_addr = collector.grpc
    watch = tmp_path / "finance"
    watch.mkdir()
    agent = _agent(state, watch)
    try:
        eventually(lambda: collector.events(token), what="agent.start")
        assert collector.stop() == 0
        for i in range(50):
            (watch / f"while-down-{i}.txt").write_text("x")
        time.sleep(1.0)
        collector.start(grpc_listen=grpc_addr)
        events = eventually(
            lambda: (lambda ev: ev if sum(e["kind"] == "file.write" for e in ev) == 50 else None)(collector.events(token)),
            timeout=40, what="the 50 writes made while the collector was down",
        )
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    finally:
        stop(agent)


def test_bad_command_lines_exit_2_with_a_message(tmp_path: Path) -> None:
    not_enrolled = run(tool("shoumi-agent"), "run", "--state-dir", str(tmp_path / "x"), "--watch", str(tmp_path), check=False)
    assert not_enrolled.returncode == 2 and "not enrolled" in not_enrolled.stderr
    bad_role = run(tool("shoumi-collector"), "user", "create", "--data-dir", str(tmp_path / "c"), "--username", "u",
                   "--role", "boss", check=False)
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr
    no_user = run(tool("shoumi-collector"), "api-token", "create", "--data-dir", str(tmp_path / "c"), "--username", "ghost", check=False)
    assert no_user.returncode == 2 and "no user" in no_user.stderr
    short = run(tool("shoumi-collector"), "user", "create", "--data-dir", str(tmp_path / "c"), "--username", "u",
                "--role", "hr", "--password-stdin", stdin="short\n", check=False)
    assert short.returncode == 2 and "12 characters" in short.stderr
    token = run(tool("shoumi-collector"), "enroll-token", "create", "--data-dir", str(tmp_path / "c")).stdout.strip()
    assert run(tool("shoumi-collector"), "enroll-token", "revoke", "--data-dir", str(tmp_path / "c"), token).returncode == 0
    again = run(tool("shoumi-collector"), "enroll-token", "revoke", "--data-dir", str(tmp_path / "c"), token, check=False)
    assert again.returncode == 2 and "no unused" in again.stderr
    # a lost token is revoked by the id `enroll-token list` shows, not only by its value
    run(tool("shoumi-collector"), "enroll-token", "create", "--data-dir", str(tmp_path / "c"))
    [listed] = [line.split("\t") for line in run(tool("shoumi-collector"), "enroll-token", "list", "--data-dir",
                                                   str(tmp_path / "c")).stdout.splitlines() if "\tactive\t" in line]
    by_id = run(tool("shoumi-collector"), "enroll-token", "revoke", "--data-dir", str(tmp_path / "c"), listed[0], check=False)
    assert by_id.returncode == 0, by_id.stderr
    after = run(tool("shoumi-collector"), "enroll-token", "list", "--data-dir", str(tmp_path / "c")).stdout
    assert f"{listed[0]}\trevoked" in after
    bad_listen = run(tool("shoumi-collector"), "serve", "--data-dir", str(tmp_path / "c"), "--http-listen", "nonsense", check=False)
    assert bad_listen.returncode == 2 and "HOST:PORT" in bad_listen.stderr


def _answering(collector: Collector, path: str, token: str) -> Any:
    try:
        return collector.get(path, token)
    except urllib.error.URLError:  # the web app may still be binding its port
        return None


@pytest.mark.slow
def test_demo_runs_and_raises_its_three_alerts(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    ready = tmp_path / "ready.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--once", "--data-dir", str(data),
                           "--ready-file", str(ready)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    doc = json.loads(ready.read_text())
    # IT's part: a multi-use token with a label, the collector's policy for that label applied by the agent
    assert doc["policy"]["source"] == "collector" and doc["policy"]["name"] == "finance-demo", doc["policy"]
    assert f"enrolled with label {doc['label']} and applied policy finance-demo v1 from the collector" in out
    # the employee acknowledged the monitoring notice and the agreement
    assert "zhangsan (employee E1001) acknowledged 《员工监控告知书》" in out and "zhangsan / " in out
    # the witness cosigned at least one head; the case's bundle exists and verifies offline with its key
    assert doc["witness"]["cosigned_size"] >= 1
    bundle = doc["bundle"]
    assert Path(bundle["path"]).is_file() and bundle["verify_exit"] == 0, bundle
    assert "demo: shoumi-verify (exit 0): 结论：全部验证通过" in out
    again = subprocess.run([tool("shoumi-verify"), bundle["path"], "--witness-key", doc["witness"]["public_key_file"],
                            "--lang", "en"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "RESULT: everything holds" in again.stdout, again.stdout + again.stderr
    assert f"证据包 Bundle:          {bundle['path']}" in out and "核验 Verify:" in out
    assert "告警队列 Alert queue:   http://127.0.0.1:" in out and "analyst / " in out and "hr / " in out
    # the rest of the chain: a case from the stick alert, both confirmations, the bridge's schedule
    assert "demo: case #1 opened from alert #" in out and "the payroll bridge filed case #1" in out
    assert re.search(r"\n  \d{4}-\d\d: 1,600\.00 yuan \(CAP20\)\n", out), out  # 20% of an 8,000-yuan wage binds
    assert "案件 Case:              http://127.0.0.1:" in out
    assert "bulk_read's floor lowered to 30 reads an hour" in out and "declared removable media" in out
    assert not done.stderr.strip(), done.stderr
    for log in ("collector.log", "agent.log", "payroll.log", "witness.log"):
        text = (data / "logs" / log).read_text()
        assert "Traceback" not in text and " ERROR " not in text, text
    assert "stopped (all delivered)" in (data / "logs" / "agent.log").read_text()
    token = re.search(r"Bearer (\S+)'", out).group(1)  # type: ignore[union-attr]

    collector = Collector(data / "collector").start("--rules", str(data / "rules.toml"))  # what the demo stored
    try:
        alerts = eventually(lambda: _answering(collector, "/api/v1/alerts", token), what="the API")["items"]
        assert sorted(a["rule"] for a in alerts) == ["bulk_read", "sensitive_copy_out", "usb_exfiltration"]
        by_rule = {a["rule"]: a for a in alerts}
        for alert in alerts:  # each alert is printed with its sentence
            assert f"  {alert['rule']} ({alert['severity']}): {alert['summary']}" in out
        assert by_rule["usb_exfiltration"]["evidence_count"] == 3  # three files to the stick: one alert
        assert "into a sync folder (*/Nutstore/*)" in by_rule["sensitive_copy_out"]["summary"]
        assert by_rule["bulk_read"]["evidence_count"] > 30
        events = collector.events(token)
        usb = [e for e in events if e["kind"] == "usb.write"]
        assert len(usb) == 3 and all(e["attributes"]["match"] == "exact" for e in usb)
        copy = next(e for e in events if e["kind"] == "file.copy")
        assert copy["dest_path"].endswith("/Nutstore/for-my-new-job.txt")
        assert events[-1]["kind"] == "agent.stop"
    finally:
        assert collector.stop() == 0


@pytest.mark.slow
def test_revoked_agent_is_cut_off_and_keeps_its_events(collector: Collector, tmp_path: Path) -> None:
    collector.start()
    token, state = _setup(collector, tmp_path)
    watch = tmp_path / "finance"
    watch.mkdir()
    # the first address answers nothing: the agent moves on to the next collector in its list
    agent = _agent(state, watch, "--heartbeat-seconds", "1", "--collector", f"127.0.0.1:1,{collector.grpc}")
    try:
        first = eventually(lambda: [e for e in collector.events(token) if e["kind"] == "agent.heartbeat"], what="a heartbeat")
        agent_id = first[0]["agent_id"]
        collector.cli("agent", "revoke", agent_id)
        time.sleep(2.5)  # at least two heartbeats are refused meanwhile
        stored_after_revoke = len(collector.events(token))
        (watch / "after-revocation.txt").write_text("x")
        time.sleep(2.0)
        assert len(collector.events(token)) == stored_after_revoke  # nothing more accepted
        listing = collector.cli("agent", "list")
        assert f"{agent_id}\t" in listing and "revoked" in listing
    finally:
        stop(agent)
    from agent.spool import Spool

    spool = Spool(state / "spool.db", agent_id=agent_id)
    try:
        assert spool.stats().unacked_events + spool.stats().unsealed > 0  # kept, not dropped
    finally:
        spool.close()


@pytest.mark.slow
def test_a_killed_agent_is_reported_silent_and_a_stopped_one_is_not(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOUMI_COLLECTOR_SILENCE_CHECK_SECONDS", "0.5")
    collector.start()
    token, _ = _setup(collector, tmp_path)
    ids = {}
    for name in ("stopping", "vanishing"):
        state = tmp_path / name
        ids[name] = collector.enroll_agent(state).stdout.strip()
        watch = tmp_path / f"{name}-watch"
        watch.mkdir()
        proc = _agent(state, watch, "--heartbeat-seconds", "1")
        eventually(lambda: any(e["agent_id"] == ids[name] and e["kind"] == "agent.heartbeat"
                               for e in collector.events(token)), what=f"{name}'s heartbeat")
        if name == "stopping":
            assert stop(proc) == 0  # SIGTERM: a signed agent.stop
        else:
            proc.kill()  # a disappearance
            proc.wait()
    silent = eventually(
        lambda: [a for a in collector.get("/api/v1/alerts", token)["items"] if a["rule"] == "agent_silent"],
        what="an agent_silent alert")
    assert [a["agent_id"] for a in silent] == [ids["vanishing"]]
    time.sleep(1.0)
    assert [a["agent_id"] for a in collector.get("/api/v1/alerts", token)["items"] if a["rule"] == "agent_silent"] == [
        ids["vanishing"]]
    listing = collector.cli("agent", "list")
    assert f"{ids['stopping']}\t" in listing and "stopped" in listing and "silent" in listing
