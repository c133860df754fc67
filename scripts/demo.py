"""Shoumi in one command: a collector on the embedded store, a local agent on a demo sensitive
folder, a short insider scenario, and where to look.

    python scripts/demo.py [--data-dir demo-data] [--once]

--once stops everything after the scenario has raised its alert (what the tests run).
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


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
    parser.add_argument("--once", action="store_true", help="stop after the alert is raised")
    args = parser.parse_args()
    root = args.data_dir.resolve()
    if root.exists():
        shutil.rmtree(root)
    (root / "logs").mkdir(parents=True)
    collector_dir, agent_dir = root / "collector", root / "agent"
    sensitive = root / "sensitive" / "finance"
    sensitive.mkdir(parents=True)
    outside = root / "outside"
    outside.mkdir()
    for i in range(30):
        (sensitive / f"customer-contract-{i:02d}.txt").write_text(f"Contract {i}: confidential pricing {i * 997}\n")

    with open(root / "logs" / "collector.log", "wb") as log:
        collector = subprocess.Popen(
            [_tool("shoumi-collector"), "serve", "--data-dir", str(collector_dir), "--grpc-listen", "127.0.0.1:0",
             "--enroll-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--read-burst-threshold", "20",
             "--read-burst-window-minutes", "5"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    agent: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(collector_dir / "collector.addr.json", collector, "collector")
        addr = json.loads((collector_dir / "collector.addr.json").read_text())
        password = secrets.token_urlsafe(12)
        _run(_tool("shoumi-collector"), "user", "create", "--data-dir", str(collector_dir), "--username", "analyst",
             "--role", "security_analyst", "--password-stdin", stdin=password + "\n")
        api_token = _run(_tool("shoumi-collector"), "api-token", "create", "--data-dir", str(collector_dir), "--username", "analyst")
        enroll_token = _run(_tool("shoumi-collector"), "enroll-token", "create", "--data-dir", str(collector_dir))
        fingerprint = _run(_tool("shoumi-collector"), "ca-fingerprint", "--data-dir", str(collector_dir))
        agent_id = _run(_tool("shoumi-agent"), "enroll", "--collector", addr["enroll"], "--token", enroll_token,
                        "--ca-fingerprint", fingerprint, "--state-dir", str(agent_dir))
        user = getpass.getuser()
        with open(root / "logs" / "agent.log", "wb") as log:
            agent = subprocess.Popen(
                [_tool("shoumi-agent"), "run", "--state-dir", str(agent_dir), "--watch", str(root / "sensitive"),
                 "--attributed-user", user, "--heartbeat-seconds", "10"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        time.sleep(1.5)  # let the watches settle
        print(f"demo: agent {agent_id} watches {root / 'sensitive'}; playing the scenario as {user}...")
        # a burst of reads by one program (as root the agent names it through fanotify)
        subprocess.run([sys.executable, "-c", "import sys, time, pathlib\n"
                        "for p in sorted(pathlib.Path(sys.argv[1]).iterdir()): p.read_bytes()\n"
                        "time.sleep(1)", str(sensitive)], check=True)
        shutil.copy(sensitive / "customer-contract-07.txt", outside / "for-my-new-job.txt")  # a copy out
        (sensitive / "customer-contract-00.txt").write_text("edited\n")
        (sensitive / "customer-contract-01.txt").rename(sensitive / "old-contract-01.txt")

        deadline = time.monotonic() + 30
        alerts: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not alerts:
            alerts = _get(f"{addr['http']}/api/v1/alerts", api_token)["items"]
            time.sleep(0.3)
        if not alerts:
            raise SystemExit("demo: no alert was raised; see demo-data/logs")
        events = _get(f"{addr['http']}/api/v1/events?limit=1000", api_token)["items"]
        print(f"demo: {len(events)} events stored, {len(alerts)} alert(s): {alerts[0]['summary']}")
        print()
        print(f"  Alerts page:  {addr['http']}/")
        print(f"  Sign in as:   analyst / {password}")
        print(f"  API:          curl -H 'Authorization: Bearer {api_token}' {addr['http']}/api/v1/events")
        print(f"  Data:         {root}")
        if not args.once:
            print("\nPress Ctrl-C to stop.")
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        if agent is not None:
            _stop(agent)
        _stop(collector)


if __name__ == "__main__":
    sys.exit(main())
