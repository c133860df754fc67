"""The agent's service definitions for Windows and macOS, generated from one description.

These platforms cannot be exercised on the Linux build machine: what is pure (the paths, the
arguments, the service and launchd definitions) is generated here and unit-tested
(tests/installers/test_service_definitions.py); the committed files under installers/windows and
installers/macos must equal what this module generates (`python installers/service_definitions.py
--write` refreshes them). Standard library only: it runs where the installers are built.
"""

from __future__ import annotations

import argparse
import plistlib
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

__all__ = ["Layout", "WINDOWS", "MACOS", "run_arguments", "enroll_arguments", "windows_service", "launchd_plist"]

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Layout:
    """Where the agent lives on one operating system."""

    executable: str      # the agent's console script inside its bundled Python environment
    state_dir: str       # identity, spool, last good policy: only the service account may read it
    config: str          # agent.toml with the [policy] table
    log_dir: str


WINDOWS = Layout(
    executable=str(PureWindowsPath(r"C:\Program Files\Shoumi Agent\venv\Scripts\shoumi-agent.exe")),
    state_dir=str(PureWindowsPath(r"C:\ProgramData\Shoumi Agent\state")),
    config=str(PureWindowsPath(r"C:\ProgramData\Shoumi Agent\agent.toml")),
    log_dir=str(PureWindowsPath(r"C:\ProgramData\Shoumi Agent\logs")),
)
MACOS = Layout(
    executable=str(PurePosixPath("/Library/Application Support/Shoumi Agent/venv/bin/shoumi-agent")),
    state_dir=str(PurePosixPath("/Library/Application Support/Shoumi Agent/state")),
    config=str(PurePosixPath("/Library/Application Support/Shoumi Agent/agent.toml")),
    log_dir=str(PurePosixPath("/Library/Logs/Shoumi Agent")),
)
SERVICE_NAME = "ShoumiAgent"
LAUNCHD_LABEL = "com.shoumi.agent"


def run_arguments(layout: Layout) -> list[str]:
    """The command line the service starts (the same `run` the Linux unit starts)."""
    return [layout.executable, "run", "--state-dir", layout.state_dir, "--config", layout.config]


def enroll_arguments(layout: Layout, *, collector: str, token: str, ca_fingerprint: str) -> list[str]:
    """The one-time enrollment the silent installers run before starting the service."""
    for name, value in (("collector", collector), ("token", token), ("ca_fingerprint", ca_fingerprint)):
        if not value or any(ch in value for ch in "\r\n\"'`$;&|<>"):
            raise ValueError(f"{name} is empty or holds characters no {name} has")
    if ":" not in collector:
        raise ValueError("collector takes HOST:PORT (the enrollment listener, e.g. collector.corp:7444)")
    return [layout.executable, "enroll", "--collector", collector, "--token", token,
            "--ca-fingerprint", ca_fingerprint, "--state-dir", layout.state_dir]


def _windows_quote(argument: str) -> str:
    """Quotes one argument the way CommandLineToArgvW reads it back."""
    if argument and not any(ch in argument for ch in ' \t"'):
        return argument
    out, backslashes = ['"'], 0
    for ch in argument:
        if ch == "\\":
            backslashes += 1
            continue
        if ch == '"':
            out.append("\\" * (2 * backslashes + 1) + '"')
        else:
            out.append("\\" * backslashes + ch)
        backslashes = 0
    out.append("\\" * (2 * backslashes) + '"')
    return "".join(out)


def windows_service(layout: Layout = WINDOWS) -> dict[str, object]:
    """The Windows service: automatic start, LocalSystem, restarted on every failure."""
    return {
        "name": SERVICE_NAME,
        "display_name": "Shoumi (守密) Agent",
        "description": "Records who read, copied or wrote the company's sensitive files; sends metadata and hashes, never content.",
        "binary_path": " ".join(_windows_quote(a) for a in run_arguments(layout)),
        "start": "auto",
        "account": "LocalSystem",
        # sc.exe failure: reset the count after a day, restart after 10 s every time
        "failure_reset_seconds": 86400,
        "failure_actions": "restart/10000/restart/10000/restart/10000",
    }


def launchd_plist(layout: Layout = MACOS) -> bytes:
    """The launchd daemon: started at boot, kept alive, as root, outside any user's session."""
    return plistlib.dumps({
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": run_arguments(layout),
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": 10,
        "UserName": "root",
        "ProcessType": "Background",
        "StandardOutPath": f"{layout.log_dir}/agent.log",
        "StandardErrorPath": f"{layout.log_dir}/agent.log",
        "ExitTimeOut": 30,
    }, sort_keys=True)


def _generated() -> dict[Path, bytes]:
    service = windows_service()
    def ps(value: object) -> str:  # a PowerShell single-quoted literal
        return "'" + str(value).replace("'", "''") + "'"

    ps1 = "\n".join([
        "# Generated by installers/service_definitions.py: the service definition install-agent.ps1 uses.",
        f"$ServiceName = {ps(service['name'])}",
        f"$DisplayName = {ps(service['display_name'])}",
        f"$Description = {ps(service['description'])}",
        f"$BinaryPath = {ps(service['binary_path'])}",
        f"$AgentExe = {ps(WINDOWS.executable)}",
        f"$StateDir = {ps(WINDOWS.state_dir)}",
        f"$ConfigPath = {ps(WINDOWS.config)}",
        f"$FailureReset = {service['failure_reset_seconds']}",
        f"$FailureActions = {ps(service['failure_actions'])}",
        "",
    ])
    return {HERE / "macos" / f"{LAUNCHD_LABEL}.plist": launchd_plist(),
            HERE / "windows" / "service-definition.ps1": ps1.encode("utf-8")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the committed definitions")
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed definition differs")
    args = parser.parse_args(argv)
    stale = []
    for path, content in _generated().items():
        if args.write:
            path.write_bytes(content)
        elif not path.exists() or path.read_bytes() != content:
            stale.append(path)
    for path in stale:
        print(f"{path} differs from what service_definitions.py generates (run it with --write)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
