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

Then it plays the rest of the chain through the collector's API the way the people would: the
analyst opens a case from the stick alert and confirms it, HR records the documented loss, the signed
agreement and the notice and confirms, and the case goes to a payroll bridge started here, whose
schedule then shows on the case page.

--once stops everything when the chain is done (what the tests run); --stop-after alerts stops the
chain after the alerts (the browser journeys play the rest); --ready-file writes the addresses,
accounts and process ids as JSON once everything is up. Ctrl-C, SIGTERM and SIGHUP stop every process
the demo started, and so does the demo's own death (each child has PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import getpass
import json
import os
import pwd
import secrets
import shutil
import signal
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


def _run(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)
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


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    policy = root / "agent.toml"
    policy.write_text("[policy]\n"
                      f"sensitive_folders = [{json.dumps(str(root / 'sensitive'))}]\n"
                      f"destinations = [{json.dumps(str(root / 'home'))}]\n"
                      f"removable_mounts = [{json.dumps(str(stick))}]  # declared: no real stick here\n")
    rules = root / "rules.toml"
    rules.write_text(RULES)

    collector = _spawn([_tool("shoumi-collector"), "serve", "--data-dir", str(collector_dir), "--grpc-listen", "127.0.0.1:0",
                        "--enroll-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--rules", str(rules)],
                       root / "logs" / "collector.log")
    agent: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(collector_dir / "collector.addr.json", collector, "collector")
        addr = json.loads((collector_dir / "collector.addr.json").read_text())
        http = addr["http"]
        password = secrets.token_urlsafe(12)
        _run(_tool("shoumi-collector"), "user", "create", "--data-dir", str(collector_dir), "--username", "analyst",
             "--role", "security_analyst", "--password-stdin", stdin=password + "\n")
        api_token = _run(_tool("shoumi-collector"), "api-token", "create", "--data-dir", str(collector_dir), "--username", "analyst")
        enroll_token = _run(_tool("shoumi-collector"), "enroll-token", "create", "--data-dir", str(collector_dir))
        fingerprint = _run(_tool("shoumi-collector"), "ca-fingerprint", "--data-dir", str(collector_dir))
        agent_id = _run(_tool("shoumi-agent"), "enroll", "--collector", addr["enroll"], "--token", enroll_token,
                        "--ca-fingerprint", fingerprint, "--state-dir", str(agent_dir))
        agent = _spawn([_tool("shoumi-agent"), "run", "--state-dir", str(agent_dir), "--config", str(policy),
                        "--attributed-user", user, "--heartbeat-seconds", "10"], root / "logs" / "agent.log")
        # ready when the policy is applied and the declared stick is watched
        ready = _until(lambda: {"policy.applied", "usb.mount"} <= {e["kind"] for e in _events(http, api_token)}, 20, agent)
        if not ready:
            raise SystemExit(f"demo: the agent did not report its policy and the stick; see {root / 'logs'}")
        time.sleep(0.5)  # let the watches settle
        print(f"demo: agent {agent_id} watches {root / 'sensitive'}; playing the scenario as {user}...")
        print(f"demo: rules {rules}: bulk_read's floor lowered to {FLOOR} reads an hour with no cold start "
              "for this short demo (defaults 100, and 40 hours of baseline); read_burst and after_hours off")
        print(f"demo: {stick} is declared removable media in the agent's policy ({policy}), standing in for a USB stick")
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
        print()
        print(f"  Alerts page:  {http}/")
        print(f"  Sign in as:   analyst / {password}")
        print(f"  API:          curl -H 'Authorization: Bearer {api_token}' {http}/api/v1/events")
        print(f"  Data:         {root}")
        if args.ready_file is not None:
            ready_doc = {"http": http, "data": str(root), "analyst": {"username": "analyst", "password": password},
                         "api_token": api_token, "alerts": {a["rule"]: a["id"] for a in alerts},
                         "pids": {"collector": collector.pid, "agent": agent.pid}}
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


if __name__ == "__main__":
    sys.exit(main())
