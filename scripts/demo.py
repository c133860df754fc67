"""Shoumi in one command: a collector on the embedded store, a local agent on a demo sensitive
folder, a short insider scenario that raises three alerts, and where to look.

    python scripts/demo.py [--data-dir demo-data] [--once]

The insider (1) reads every file of the sensitive folder within the hour (bulk_read), (2) copies a
contract into a sync folder, ~/Nutstore (sensitive_copy_out), and (3) writes three contracts to a
"USB stick" (usb_exfiltration). No real stick can be plugged in here, so the agent's policy declares
a plain directory removable, as `removable_mounts` lets IT declare a mount point. The demo's rules
file (DATA/rules.toml) lowers bulk_read's floor to suit a short demo and turns off the rules it does
not play (read_burst, which the same reads would also raise, and after_hours, which depends on the
clock).

IT's part comes first, as a deployment would: a multi-use enrollment token that gives the agent the
label dept:finance, and a policy written on the collector (`shoumi-collector policy set`) and
assigned to that label; the agent runs with no local policy and applies the collector's signed one.
A `shoumi-witness` started here cosigns the collector's tree heads (the collector is told about it
through its `witnesses` setting). HR puts the monitoring notice and the confidentiality agreement on
record and links the employee's account (zhangsan, role employee), who acknowledges both.

Then it plays the rest of the chain through the collector's API the way the people would: the
analyst opens a case from the stick alert and confirms it, HR records the documented loss, the signed
agreement and the notice and confirms, and the case goes to a payroll bridge started here, whose
schedule then shows on the case page. Last, the case is exported as an evidence bundle
(`shoumi-collector case export`) and checked offline by `shoumi-verify` with the witness's key.

--once stops everything when the chain is done (what the tests run); --stop-after alerts stops the
chain after the alerts (the browser journeys play the rest); --ready-file writes the addresses,
accounts and process ids as JSON once everything is up. Ctrl-C, SIGTERM and SIGHUP stop every process
the demo started, and so does the demo's own death (each child has PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import getpass
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

BIN = Path(sys.executable).parent
FILES = 40  # read in one go: above the demo's bulk_read floor
FLOOR = 30
EXPECTED = ("bulk_read", "sensitive_copy_out", "usb_exfiltration")

RULES = f"""\
# The demo's detection rules (shoumi-collector serve --rules FILE); see installers/linux/rules.toml.example.
[bulk_read]
floor_per_hour = {FLOOR}   # the default is 100 reads an hour...
cold_start_hours = 0   # ...judged for a new user after 40 hours of baseline; the demo has none

[read_burst]
enabled = false        # the same reads would raise it too: the demo shows bulk_read

[after_hours]
enabled = false        # whether it fires depends on when the demo is run
"""


def _tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else name


def _run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60, env=env)
    if done.returncode != 0:
        raise SystemExit(f"demo: {' '.join(args[:3])} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _wait_for(path: Path, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"demo: the {what} did not start; see its log")
        time.sleep(0.1)


def _get(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as reply:
        return json.load(reply)


def _events(http: str, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = _get(f"{http}/api/v1/events?limit=1000{'&cursor=' + cursor if cursor else ''}", token)
        items.extend(page["items"])
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return items


def _until(check: Callable[[], Any], timeout: float, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        if proc.poll() is not None:
            raise SystemExit("demo: the agent stopped; see its log")
        time.sleep(0.2)


class Stop(Exception):
    """A signal asked the demo to stop."""


def _on_signal(signum: int, _frame: Any) -> None:
    raise Stop(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """Runs in each child before exec: the kernel sends it SIGTERM when the demo dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, env=env)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


ACCOUNTS = (("analyst", "security_analyst"), ("hr", "hr"), ("hr2", "hr"), ("auditor", "auditor"), ("it", "it_admin"),
            ("zhangsan", "employee"))
EMPLOYEE = {"employee_id": "E1001", "name": "张三", "region": "CN-SH"}
LABEL = "dept:finance"  # the enrollment token gives it to the agent; the policy is assigned to it
POLICY = "finance-demo"
NDA_TEXT = ("保密协议（演示）\n员工对在职期间接触的客户合同、报价等商业秘密负有保密义务；"
            "因泄露造成公司实际损失的，依《劳动合同法》第九十条承担赔偿责任。\n")


def _free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


def _payroll_bridge(root: Path) -> tuple[dict[str, str], Path, str]:
    """Prepares the payroll bridge's ledger with the collector's own credential."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUMI_PAYROLL_")}
    env.update(SHOUMI_PAYROLL_LEDGER_PATH=str(root / "payroll" / "ledger.sqlite3"), XDG_STATE_HOME=str(root / "payroll"))
    (root / "payroll").mkdir(mode=0o700)
    made = json.loads(_run(_tool("shoumi-payroll"), "client", "create", "collector", "--actor", "it", env=env))
    token_file = root / "payroll" / "collector.token"
    token_file.write_text(made["token"] + "\n")
    token_file.chmod(0o600)
    return env, token_file, f"http://127.0.0.1:{_free_port()}"


def _payroll_wages(root: Path, env: dict[str, str]) -> None:
    """Payroll records the employee's wages for the coming months (the bridge knows the employee from the case)."""
    y, m = time.gmtime().tm_year, time.gmtime().tm_mon
    periods = [f"{y + (m - 1 + i) // 12}-{(m - 1 + i) % 12 + 1:02d}" for i in range(6)]
    wages = root / "payroll" / "wages.json"
    wages.write_text(json.dumps({"employee_id": EMPLOYEE["employee_id"], "periods": [
        {"period": p, "wage_fen": 800000, "social_insurance_fen": 84000, "housing_fund_fen": 56000} for p in periods]}))
    _run(_tool("shoumi-payroll"), "wages", str(wages), "--actor", "payroll.clerk", env=env)


def _witness(root: Path, collector_dir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Starts a shoumi-witness on loopback for the collector's tree-head key (made here as serve would make it)."""
    from collector.transparency import load_or_create_tree_key, tree_public_key

    collector_dir.mkdir(mode=0o700)
    logging.disable(logging.WARNING)  # its "created the tree-head signing key" is serve's news, not the demo's
    try:
        log_key = tree_public_key(load_or_create_tree_key(collector_dir)).hex()
    finally:
        logging.disable(logging.NOTSET)
    folder = root / "witness"
    folder.mkdir(mode=0o700)
    key_file, public = folder / "witness.key", folder / "witness.pub"
    public.write_text(_run(_tool("shoumi-witness"), "init", "--key", str(key_file)) + "\n")
    ready = folder / "ready.json"
    proc = _spawn([_tool("shoumi-witness"), "serve", "--key", str(key_file), "--state", str(folder / "state.json"),
                   "--log-key", log_key, "--name", "auditor-witness", "--listen", "127.0.0.1:0",
                   "--ready-file", str(ready)], root / "logs" / "witness.log")
    _wait_for(ready, proc, "witness")
    return proc, json.loads(ready.read_text())["url"], public


def _cosigned_size(url: str) -> int:
    with urllib.request.urlopen(url + "/", timeout=5) as reply:
        return int(json.load(reply)["tree_size"])


def _api(http: str, token: str, method: str, path: str, **kw: Any) -> Any:
    import httpx

    reply = httpx.request(method, http + path, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kw)
    if reply.status_code >= 400:
        raise SystemExit(f"demo: {method} {path} answered {reply.status_code}: {reply.text[:300]}")
    return reply.json()


def _signed_in(http: str, username: str, password: str) -> tuple[Any, str]:
    """A browser's session, as the employee gets one on /login: the client with its cookie, and the CSRF token."""
    import re

    import httpx

    client = httpx.Client(base_url=http, timeout=30, follow_redirects=True)
    form = client.get("/login").text
    login_csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    reply = client.post("/login", data={"username": username, "password": password, "next": "/me/notices",
                                        "csrf_token": login_csrf.group(1) if login_csrf else ""})
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', reply.text)
    if reply.status_code != 200 or csrf is None:
        raise SystemExit(f"demo: {username} could not sign in ({reply.status_code}): {reply.text[:300]}")
    return client, csrf.group(1)


def _notices(http: str, tokens: dict[str, str], user: str, password: str) -> list[dict[str, Any]]:
    """HR puts the monitoring notice and the agreement on record and links the employee, who signs in on /login
    and acknowledges both (the record names the session, as it does for a person in a browser)."""
    from collector.agreements.models import default_notice_text

    hr = tokens["hr"]
    today = time.strftime("%Y-%m-%d", time.localtime())
    for title, kind, text in (("员工监控告知书", "monitoring_notice", default_notice_text(retention_days=365)),
                              ("保密协议", "confidentiality", NDA_TEXT)):
        made = _api(http, hr, "POST", "/api/v1/agreements", json={"title": title, "kind": kind})
        _api(http, hr, "POST", f"/api/v1/agreements/{made['id']}/versions",
             json={"version": f"{kind}-v1", "text": text, "effective_from": today})
    _api(http, hr, "POST", "/api/v1/agreements/people",
         json={"employee_id": EMPLOYEE["employee_id"], "user_name": user, "account": "zhangsan"})
    client, csrf = _signed_in(http, "zhangsan", password)
    done = []
    try:
        for item in client.get("/api/v1/me/notices").json()["items"]:
            reply = client.post(f"/api/v1/me/notices/{item['version_id']}/acknowledge",
                                json={"text_sha256": item["sha256"]}, headers={"X-CSRF-Token": csrf})
            if reply.status_code != 201:
                raise SystemExit(f"demo: acknowledging {item['title']} answered {reply.status_code}: {reply.text[:300]}")
            done.append(reply.json() | {"title": item["title"]})
    finally:
        client.close()
    return done


def _export(root: Path, collector_dir: Path, cid: int, witness_pub: Path) -> dict[str, Any]:
    """The case's evidence bundle, checked offline by shoumi-verify with the witness's key held apart."""
    bundle = root / f"case-{cid}-bundle.zip"
    sha = _run(_tool("shoumi-collector"), "case", "export", str(cid), "--out", str(bundle),
               "--data-dir", str(collector_dir))
    command = [_tool("shoumi-verify"), str(bundle), "--witness-key", str(witness_pub)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    summary = next((ln.strip() for ln in done.stdout.splitlines() if ln.strip().startswith(("结论", "RESULT"))),
                   done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip())
    (root / "logs" / "verify.txt").write_text(done.stdout + done.stderr)
    return {"path": str(bundle), "sha256": sha, "verify_exit": done.returncode, "summary": summary,
            "command": " ".join(command)}


def _play_case(http: str, tokens: dict[str, str], alert_id: int, agent: subprocess.Popen[bytes],
               wages: Callable[[], None]) -> dict[str, Any]:
    """The people's part, through the API: security opens and confirms, HR records and confirms, HR sends."""
    sec, hr = tokens["analyst"], tokens["hr"]
    case = _api(http, sec, "POST", "/api/v1/cases", json={"alert_ids": [alert_id], "title": "把客户合同写入U盘"})
    cid = case["id"]
    for to in ("under_review", "security_confirmed"):
        _api(http, sec, "POST", f"/api/v1/cases/{cid}/transition", json={"to": to})
    print(f"demo: case #{cid} opened from alert #{alert_id} and confirmed by analyst (security)")
    report = "第三方鉴定报告：客户合同外泄造成的直接损失 5,000 元".encode()
    doc = _api(http, hr, "POST", f"/api/v1/cases/{cid}/attachments",
               files={"file": ("损失鉴定报告.txt", report, "text/plain")})
    _api(http, hr, "POST", f"/api/v1/cases/{cid}/hr/loss",
         json={"amount_yuan": "5000.00", "kind": "direct", "documents": [doc["id"]]})
    _api(http, hr, "POST", f"/api/v1/cases/{cid}/hr/agreement", json={
        "version": "NDA-2024-v3", "document_sha256": hashlib.sha256(b"demo: the signed NDA").hexdigest(),
        "signed_by": EMPLOYEE["employee_id"], "signed_at": "2024-03-01T10:00:00+08:00",
        "identity_check": "电子签约平台实名认证 + 短信验证码"})
    _api(http, hr, "POST", f"/api/v1/cases/{cid}/hr/employee", json=EMPLOYEE)
    served = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _api(http, hr, "POST", f"/api/v1/cases/{cid}/hr/notice", json={"served_at": served, "method": "当面送达，员工签收"})
    for to in ("hr_confirmed", "sent_to_payroll"):
        _api(http, hr, "POST", f"/api/v1/cases/{cid}/transition", json={"to": to})
    print("demo: HR (hr) recorded the loss of 5,000.00 yuan, the agreement NDA-2024-v3 and the notice, "
          "confirmed, and sent the case to payroll")
    print("demo:   (HR's page offers the registry's records signed on a day before the incident; zhangsan's "
          "acknowledgement of today cannot back this case, so the agreement's details are typed)")

    def answered(with_schedule: bool) -> dict[str, Any] | None:
        handoffs = _api(http, hr, "GET", f"/api/v1/cases/{cid}/handoff")
        done = [h for h in handoffs if h.get("state") in ("accepted", "refused")]
        if not done or (with_schedule and done[-1]["state"] == "accepted" and not done[-1].get("schedule")):
            return None
        return dict(done[-1])

    handoff = _until(lambda: answered(False), 30, agent)
    if handoff and handoff["state"] == "accepted":
        wages()
        _api(http, hr, "POST", f"/api/v1/cases/{cid}/handoff/refresh")
        handoff = _until(lambda: answered(True), 30, agent)
    if not handoff:
        raise SystemExit(f"demo: the payroll bridge did not answer for case #{cid}; see {http}/cases/{cid}")
    return {"id": cid, "handoff": handoff}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    parser.add_argument("--once", action="store_true", help="stop everything when the scenario is played")
    parser.add_argument("--stop-after", choices=("alerts", "chain"), default="chain",
                        help="play the scenario up to the alerts, or through the case to payroll (default)")
    parser.add_argument("--ready-file", type=Path, help="write addresses, accounts and pids here as JSON when up")
    args = parser.parse_args()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    root = args.data_dir.resolve()
    if root.exists():
        shutil.rmtree(root)
    (root / "logs").mkdir(parents=True)
    collector_dir, agent_dir = root / "collector", root / "agent"
    try:  # the name the agent gives the reads it attributes by uid (as root, through fanotify)
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = getpass.getuser()
    sensitive = root / "sensitive" / "finance"
    sensitive.mkdir(parents=True)
    for i in range(FILES):
        (sensitive / f"customer-contract-{i:02d}.txt").write_text(
            f"Contract {i}: confidential pricing {i * 997} for customer {i * 7919 % 1000:03d}\n" * 20)
    home = root / "home" / user  # the insider's home, kept inside the demo's data
    sync = home / "Nutstore"  # where 坚果云 keeps what it uploads
    sync.mkdir(parents=True)
    stick = root / "stick"  # stands in for a USB stick: declared removable in the policy below
    stick.mkdir()
    policy = root / "policy.toml"  # IT writes it on the collector; the agent gets it signed, by its label
    policy.write_text("[policy]\n"
                      f"sensitive_folders = [{json.dumps(str(root / 'sensitive'))}]\n"
                      f"destinations = [{json.dumps(str(root / 'home'))}]\n"
                      f"removable_mounts = [{json.dumps(str(stick))}]  # declared: no real stick here\n")
    rules = root / "rules.toml"
    rules.write_text(RULES)

    payroll_env, payroll_token, payroll_url = _payroll_bridge(root)
    bridge = _spawn([_tool("shoumi-payroll"), "serve", "--listen", payroll_url.removeprefix("http://")],
                    root / "logs" / "payroll.log", env=payroll_env)
    witness, witness_url, witness_pub = _witness(root, collector_dir)
    witness_key = witness_pub.read_text().strip()
    os.environ.update(SHOUMI_COLLECTOR_CASES__PAYROLL_URL=payroll_url,
                      SHOUMI_COLLECTOR_CASES__PAYROLL_TOKEN_FILE=str(payroll_token),
                      SHOUMI_COLLECTOR_TREE_HEAD_SECONDS="2",  # a signed head every 2 s (default 60) for a short demo
                      SHOUMI_COLLECTOR_WITNESSES=json.dumps(
                          [{"name": "auditor-witness", "url": witness_url, "public_key": witness_key}]))
    collector = _spawn([_tool("shoumi-collector"), "serve", "--data-dir", str(collector_dir), "--grpc-listen", "127.0.0.1:0",
                        "--enroll-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--rules", str(rules)],
                       root / "logs" / "collector.log")
    agent: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(collector_dir / "collector.addr.json", collector, "collector")
        addr = json.loads((collector_dir / "collector.addr.json").read_text())
        http = addr["http"]
        passwords = {name: secrets.token_urlsafe(12) for name, _ in ACCOUNTS}
        for name, role in ACCOUNTS:
            _run(_tool("shoumi-collector"), "user", "create", "--data-dir", str(collector_dir), "--username", name,
                 "--role", role, "--password-stdin", stdin=passwords[name] + "\n")
        tokens = {name: _run(_tool("shoumi-collector"), "api-token", "create", "--data-dir", str(collector_dir),
                             "--username", name) for name in ("analyst", "hr")}
        api_token = tokens["analyst"]
        cli = (_tool("shoumi-collector"),)
        data = ("--data-dir", str(collector_dir))
        # IT: one token for a batch of finance workstations, which all receive the label; a policy for that label
        enroll_token = _run(*cli, "enroll-token", "create", *data, "--uses", "20", "--label", LABEL,
                            "--name", "finance workstations (demo)")
        _run(*cli, "policy", "set", POLICY, "--file", str(policy), *data, "--comment", "demo: the finance share")
        _run(*cli, "policy", "assign", POLICY, "--label", LABEL, *data)
        print(f"demo: IT made an enrollment token for 20 machines labelled {LABEL} and assigned the policy "
              f"{POLICY} ({policy}) to that label")
        fingerprint = _run(*cli, "ca-fingerprint", *data)
        agent_id = _run(_tool("shoumi-agent"), "enroll", "--collector", addr["enroll"], "--token", enroll_token,
                        "--ca-fingerprint", fingerprint, "--state-dir", str(agent_dir))
        # no --config: the agent waits for the collector's policy, signed with the key it pinned at enrollment
        agent = _spawn([_tool("shoumi-agent"), "run", "--state-dir", str(agent_dir),
                        "--attributed-user", user, "--heartbeat-seconds", "10"], root / "logs" / "agent.log")

        def applied() -> dict[str, Any] | None:  # ready when the pushed policy is applied and the stick is watched
            events = _events(http, api_token)
            pushed = [e for e in events if e["kind"] == "policy.applied"
                      and e["attributes"].get("source") == "collector"]
            return pushed[-1] if pushed and any(e["kind"] == "usb.mount" for e in events) else None

        pushed = _until(applied, 30, agent)
        if not pushed:
            raise SystemExit(f"demo: the agent did not apply the collector's policy and watch the stick; see {root / 'logs'}")
        time.sleep(0.5)  # let the watches settle
        attrs = pushed["attributes"]
        print(f"demo: agent {agent_id} enrolled with label {LABEL} and applied policy {attrs['name']} "
              f"v{int(attrs['version'])} from the collector (sha256 {str(attrs['sha256'])[:12]}…)")
        for ack in _notices(http, tokens, user, passwords["zhangsan"]):
            seal = ack.get("seal")
            print(f"demo: zhangsan (employee E1001) acknowledged 《{ack['title']}》 on /me/notices "
                  f"(seal: {seal}{'; no timestamp authority is configured in the demo' if seal != 'sealed' else ''})")
        print(f"demo: agent {agent_id} watches {root / 'sensitive'}; playing the scenario as {user}...")
        print(f"demo: rules {rules}: bulk_read's floor lowered to {FLOOR} reads an hour with no cold start "
              "for this short demo (defaults 100, and 40 hours of baseline); read_burst and after_hours off")
        print(f"demo: {stick} is declared removable media in the policy the collector pushed ({policy}), "
              "standing in for a USB stick")
        to_next_hour = 3600 - time.time() % 3600
        if to_next_hour < 10:  # bulk_read counts per clock hour: keep the reads in one
            time.sleep(to_next_hour + 0.5)
        # (1) a bulk read of the folder by one program (as root the agent names it through fanotify)
        subprocess.run([sys.executable, "-c", "import sys, time, pathlib\n"
                        "for p in sorted(pathlib.Path(sys.argv[1]).iterdir()): p.read_bytes()\n"
                        "time.sleep(1)", str(sensitive)], check=True)
        print(f"demo:   read {FILES} files in {sensitive}")
        # (2) a contract into the sync folder
        shutil.copyfile(sensitive / "customer-contract-07.txt", sync / "for-my-new-job.txt")
        print(f"demo:   copied customer-contract-07.txt to {sync / 'for-my-new-job.txt'}")
        # (3) three contracts onto the stick
        for i in (3, 4, 5):
            shutil.copyfile(sensitive / f"customer-contract-{i:02d}.txt", stick / f"customer-contract-{i:02d}.txt")
        print(f"demo:   wrote customer-contract-03..05.txt to {stick}")
        (sensitive / "customer-contract-00.txt").write_text("edited\n")
        (sensitive / "customer-contract-01.txt").rename(sensitive / "old-contract-01.txt")

        def raised() -> list[dict[str, Any]] | None:
            alerts = _get(f"{http}/api/v1/alerts", api_token)["items"]
            return alerts if set(EXPECTED) <= {a["rule"] for a in alerts} else None

        alerts = _until(raised, 30, agent)
        if not alerts:
            got = sorted({a["rule"] for a in _get(f"{http}/api/v1/alerts", api_token)["items"]})
            raise SystemExit(f"demo: expected alerts {', '.join(EXPECTED)}, got {', '.join(got) or 'none'}; "
                             f"see {root / 'logs'}")
        # the evidence keeps arriving for a moment: print the alerts once they stop changing
        settled = [(a["rule"], a["evidence_count"]) for a in alerts]
        for _ in range(10):
            time.sleep(0.5)
            alerts = _get(f"{http}/api/v1/alerts", api_token)["items"]
            now = [(a["rule"], a["evidence_count"]) for a in alerts]
            if now == settled:
                break
            settled = now
        events = _events(http, api_token)
        print(f"demo: {len(events)} events stored, {len(alerts)} alert(s):")
        for a in sorted(alerts, key=lambda a: EXPECTED.index(a["rule"]) if a["rule"] in EXPECTED else 99):
            print(f"  {a['rule']} ({a['severity']}): {a['summary']}")
        case: dict[str, Any] | None = None
        bundle: dict[str, Any] | None = None
        if args.stop_after == "chain":
            by_rule = {a["rule"]: a for a in alerts}
            case = _play_case(http, tokens, by_rule["usb_exfiltration"]["id"], agent,
                              lambda: _payroll_wages(root, payroll_env))
            h = case["handoff"]
            if h.get("state") == "refused":
                print(f"demo: the payroll bridge refused case #{case['id']}: {h.get('status')}")
            else:
                print(f"demo: the payroll bridge filed case #{case['id']}; its schedule (月份 month: 扣款 deduction, 约束 binding limit):")
                for line in (x for x in h["schedule"] if x["deduction_fen"]):
                    print(f"  {line['period']}: {line['deduction_fen'] / 100:,.2f} yuan ({line['binding']})")
            # the witness must have cosigned a head that holds the case's events before the bundle is made
            cosigned = _until(lambda: _cosigned_size(witness_url) or None, 30, agent)
            if not cosigned:
                raise SystemExit(f"demo: the witness cosigned no tree head; see {root / 'logs' / 'witness.log'}")
            bundle = _export(root, collector_dir, case["id"], witness_pub)
            print(f"demo: the witness cosigned the collector's tree heads up to {_cosigned_size(witness_url)} batches")
            print(f"demo: case #{case['id']} exported as an evidence bundle {bundle['path']} (sha256 {bundle['sha256'][:12]}…)")
            print(f"demo: shoumi-verify (exit {bundle['verify_exit']}): {bundle['summary']}")
            if bundle["verify_exit"] != 0:
                raise SystemExit(f"demo: the bundle does not verify; see {root / 'logs' / 'verify.txt'}")
        print()
        print(f"  告警队列 Alert queue:   {http}/alerts")
        if case is not None:
            print(f"  案件 Case:              {http}/cases/{case['id']}")
            print(f"  人事确认 HR page:       {http}/cases/{case['id']}/hr")
        print(f"  终端 Fleet (it):        {http}/fleet   enrollment tokens {http}/fleet/tokens")
        print(f"  策略 Policies (it):     {http}/policies/{POLICY}")
        print(f"  协议 Agreements (hr):   {http}/agreements/people/{EMPLOYEE['employee_id']}")
        print(f"  员工告知 Notices (zhangsan): {http}/me/notices")
        print(f"  审计日志 Audit log:     {http}/audit")
        print(f"  见证者 Witness:         {witness_url}/ (public key {witness_pub})")
        if bundle is not None:
            print(f"  证据包 Bundle:          {bundle['path']}")
            print(f"  核验 Verify:            {bundle['command']}")
        print("  登录 Sign in as:        " + ", ".join(f"{name} / {passwords[name]}" for name, _ in ACCOUNTS))
        print(f"  API:                    curl -H 'Authorization: Bearer {api_token}' {http}/api/v1/events")
        print(f"  数据 Data:              {root}")
        if args.ready_file is not None:
            ready_doc = {"http": http, "data": str(root), "passwords": passwords, "tokens": tokens,
                         "alerts": {a["rule"]: a["id"] for a in alerts}, "case": case, "bundle": bundle,
                         "agent_id": agent_id, "policy": pushed["attributes"], "label": LABEL,
                         "witness": {"url": witness_url, "public_key_file": str(witness_pub),
                                     "cosigned_size": _cosigned_size(witness_url)},
                         "pids": {"collector": collector.pid, "agent": agent.pid, "payroll": bridge.pid,
                                  "witness": witness.pid}}
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(ready_doc, ensure_ascii=False))
            tmp.replace(args.ready_file)
        if not args.once:
            print("\nPress Ctrl-C to stop.")
            signal.pause()
        return 0
    except (KeyboardInterrupt, Stop) as why:
        print(f"\ndemo: {why or 'Ctrl-C'}: stopping everything it started", file=sys.stderr)
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the clean stop short
        if agent is not None:
            _stop(agent)
        _stop(collector)
        _stop(bridge)
        _stop(witness)


if __name__ == "__main__":
    sys.exit(main())
