"""The Debian packages as IT installs them: built from the repository by installers/linux/build-deb.sh,
checked for their contents and maintainer scripts, installed with dpkg into a throwaway root (an
overlay of this machine's own system, so its packages satisfy the dependencies and nothing of the
machine changes), enrolled against a real collector, upgraded with events in the spool, and purged.

There is no systemd as PID 1 here: the maintainer scripts' systemctl branches are not taken, and
the test starts the service's ExecStart command itself, as systemd would, then lets the package's
prerm stop it (it falls back to the pid file the service wrapper writes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import Collector, eventually, stop

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "installers" / "linux" / "build-deb.sh"
ARCH = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip() \
    if shutil.which("dpkg") else ""
VERSION = "0.1.0"
UPGRADE = "0.1.0+2"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed (a machine facility)"),
    pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no Debian python3 to build against"),
]


def _build(*args: str) -> None:
    done = subprocess.run(["bash", str(BUILD), *args], capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both packages at VERSION and the agent again at UPGRADE (a rebuild), with their checksums.

    SHOUMI_TEST_DEB_DIR names a folder of packages built earlier by this fixture, to work on the tests
    below without rebuilding (CI never sets it: there the packages are always built)."""
    prebuilt = os.environ.get("SHOUMI_TEST_DEB_DIR")
    if prebuilt:
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("dist")
    wheels = tmp_path_factory.mktemp("wheels")
    _build("all", "--version", VERSION, "--out", str(out), "--wheelhouse", str(wheels))
    _build("agent", "--version", UPGRADE, "--out", str(out), "--wheelhouse", str(wheels))
    return out


def _deb(dist: Path, package: str, version: str = VERSION) -> Path:
    return dist / f"{package}_{version}_{ARCH}.deb"


def _contents(deb: Path) -> dict[str, str]:
    """Path -> mode string of every member."""
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in listing.splitlines():
        mode, *_, name = line.split(None, 5)
        found[name.split(" -> ")[0].lstrip(".")] = mode
    return found


def _control(deb: Path, name: str) -> str:
    """One member of the package's control area (control, conffiles, a maintainer script)."""
    return subprocess.run(["dpkg-deb", "-I", str(deb), name], capture_output=True, text=True, check=True).stdout


def test_checksums_verify(dist: Path) -> None:
    done = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dist, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = {line.split()[1] for line in (dist / "SHA256SUMS").read_text().splitlines()}
    assert listed == {p.name for p in dist.glob("*.deb")}


def test_agent_package_contents(dist: Path) -> None:
    deb = _deb(dist, "shoumi-agent")
    files = _contents(deb)
    for needed in ("/opt/shoumi-agent/bin/shoumi-agent", "/opt/shoumi-agent/bin/shoumi-agent-service",
                   "/lib/systemd/system/shoumi-agent.service", "/etc/shoumi-agent/agent.toml",
                   "/usr/lib/sysctl.d/60-shoumi-agent.conf", "/usr/share/doc/shoumi-agent/copyright"):
        assert needed in files, needed
    assert files["/opt/shoumi-agent/bin/shoumi-agent-service"].startswith("-rwxr-xr-x")
    # the agent carries its own dependencies, not the collector's web stack
    site = [f for f in files if "/site-packages/" in f]
    assert any("/site-packages/grpc/" in f for f in site) and any("/site-packages/watchdog/" in f for f in site)
    assert not any(f"/site-packages/{web}/" in f for f in site for web in ("fastapi", "sqlalchemy", "uvicorn"))
    assert "/opt/shoumi-agent/bin/shoumi-collector" not in files
    control = _control(deb, "control")
    assert f"Version: {VERSION}" in control and f"Architecture: {ARCH}" in control and "python3 (>= 3.11)" in control
    assert _control(deb, "conffiles").split() == ["/etc/shoumi-agent/agent.toml"]
    for script in ("postinst", "prerm", "postrm", "config"):
        text = _control(deb, script)
        assert text.startswith("#!/bin/sh")
        checked = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True)
        assert checked.returncode == 0, (script, checked.stderr)


def test_collector_package_contents(dist: Path) -> None:
    deb = _deb(dist, "shoumi-collector")
    files = _contents(deb)
    for needed in ("/opt/shoumi-collector/bin/shoumi-collector", "/lib/systemd/system/shoumi-collector.service",
                   "/etc/shoumi-collector/collector.env"):
        assert needed in files, needed
    assert any("/site-packages/psycopg/" in f for f in files)  # PostgreSQL to scale
    assert "adduser" in _control(deb, "control")
    assert "deluser --system shoumi-collector" in _control(deb, "postrm")


class Root:
    """A throwaway root: an overlay over this machine's / with proc, sys and dev, and tmpfs /run, /tmp and
    /dev/shm (1777, as on an installed system: the collector's worker processes take semaphores there)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.path = base / "merged"

    def __enter__(self) -> "Root":
        for d in ("upper", "work", "merged"):
            (self.base / d).mkdir(parents=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir=/,upperdir={self.base / 'upper'},workdir={self.base / 'work'}", str(self.path)],
                       check=True, capture_output=True)
        self.mounts = [self.path]
        for kind, source, target in (("proc", "proc", "proc"), ("bind", "/sys", "sys"), ("bind", "/dev", "dev"),
                                     ("tmpfs", "tmpfs", "run"), ("tmpfs", "tmpfs", "tmp"), ("shm", "tmpfs", "dev/shm")):
            args = (["mount", "--bind", source] if kind == "bind" else
                    ["mount", "-t", "tmpfs", "-o", "mode=1777", source] if kind == "shm" else ["mount", "-t", kind, source])
            subprocess.run([*args, str(self.path / target)], check=True, capture_output=True)
            self.mounts.append(self.path / target)
        return self

    def __exit__(self, *exc: object) -> None:
        for mount in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8",
                       **(env or {})}
        return subprocess.run(["/usr/sbin/chroot", str(self.path), *args], capture_output=True, text=True, timeout=600,
                              env=environment)

    def start_service(self, log: Path) -> subprocess.Popen[bytes]:
        """What systemd does for shoumi-agent.service: its runtime directory, then ExecStart."""
        (self.path / "run" / "shoumi-agent").mkdir(mode=0o700, exist_ok=True)
        env = {"PATH": "/usr/bin:/bin", "SHOUMI_AGENT_HEARTBEAT_SECONDS": "1", "SHOUMI_AGENT_ATTRIBUTED_USER": "alice",
               "SHOUMI_AGENT_BATCH_LINGER_S": "0.05"}
        with open(log, "ab") as out:
            return subprocess.Popen(["/usr/sbin/chroot", str(self.path), "/opt/shoumi-agent/bin/shoumi-agent-service", "run"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env)

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.path / path.lstrip("/"))


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    if os.geteuid() != 0:
        pytest.skip("installing into a throwaway root needs root (mount, chroot)")
    try:
        with Root(tmp_path / "root") as made:
            yield made
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"this machine cannot make an overlay root: {exc.stderr!r}")


def _events(collector: Collector, token: str, kind: str) -> list[dict]:
    return [e for e in collector.events(token) if e["kind"] == kind]


@pytest.mark.root
def test_install_enroll_upgrade_with_spooled_events_and_purge(dist: Path, root: Root, tmp_path: Path) -> None:
    collector = Collector(tmp_path / "collector")
    collector.start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        collector.cli("user", "create", "--username", "ana", "--role", "security_analyst", "--password-stdin",
                      stdin="a long enough password\n")
        api = collector.cli("api-token", "create", "--username", "ana")
        for deb in dist.glob("*.deb"):
            shutil.copy(deb, root.path / "tmp" / deb.name)
        v1, v2 = f"/tmp/{_deb(dist, 'shoumi-agent').name}", f"/tmp/{_deb(dist, 'shoumi-agent', UPGRADE).name}"

        # 1. A wrong CA fingerprint: the package installs, says what is wrong, and nothing is half-enrolled.
        token = collector.cli("enroll-token", "create")
        wrong = {"SHOUMI_COLLECTOR": collector.enroll, "SHOUMI_ENROLL_TOKEN": token, "SHOUMI_CA_FINGERPRINT": "ab" * 32}
        done = root.run("dpkg", "-i", v1, env=wrong)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "fingerprint" in (done.stdout + done.stderr).lower() and "retries" in done.stderr
        assert not root.exists("/var/lib/shoumi-agent/agent.json")
        assert oct((root.path / "var/lib/shoumi-agent/enroll.env").stat().st_mode & 0o777) == "0o600"
        again = root.run("/opt/shoumi-agent/bin/shoumi-agent-service", "run")
        assert again.returncode == 1 and "enrollment with" in again.stderr  # the service's start fails, and says why

        # 2. Reinstalled with the right answers: enrolled, the token not kept anywhere.
        right = {**wrong, "SHOUMI_CA_FINGERPRINT": collector.fingerprint}
        done = root.run("dpkg", "-i", v1, env=right)
        assert done.returncode == 0, done.stdout + done.stderr
        state = json.loads((root.path / "var/lib/shoumi-agent/agent.json").read_text())
        assert not root.exists("/var/lib/shoumi-agent/enroll.env")
        assert token not in root.run("debconf-show", "shoumi-agent").stdout
        (root.path / "srv" / "secret").mkdir(parents=True, exist_ok=True)
        (root.path / "etc/shoumi-agent/agent.toml").write_text('[policy]\nsensitive_folders = ["/srv/secret"]\n')

        # 3. The installed agent runs and delivers.
        log = tmp_path / "agent.log"
        agent = root.start_service(log)
        eventually(lambda: _events(collector, api, "agent.heartbeat"), timeout=60, what=f"heartbeat ({log})")
        (root.path / "srv/secret/plan.txt").write_text("the plan\n")
        eventually(lambda: [e for e in collector.events(api) if (e.get("path") or "").endswith("/srv/secret/plan.txt")],
                   timeout=30, what="the first file event")

        # 4. The collector goes away; events are spooled; the package is upgraded; nothing is lost.
        grpc_port = collector.grpc.rsplit(":", 1)[1]
        collector.stop()
        (root.path / "srv/secret/while-down.txt").write_text("written while the collector was down\n")
        time.sleep(2)  # recorded into the spool (the agent commits each event within milliseconds)
        done = root.run("dpkg", "-i", v2)
        assert done.returncode == 0, done.stdout + done.stderr
        assert agent.wait(timeout=60) == 0  # the old version's prerm stopped it
        assert "keeping this machine's identity" in done.stderr
        assert json.loads((root.path / "var/lib/shoumi-agent/agent.json").read_text())["agent_id"] == state["agent_id"]
        collector.start(grpc_listen=f"127.0.0.1:{grpc_port}")
        agent = root.start_service(log)
        eventually(lambda: [e for e in collector.events(api) if (e.get("path") or "").endswith("/srv/secret/while-down.txt")],
                   timeout=60, what="the spooled event after the upgrade")
        stops = eventually(lambda: _events(collector, api, "agent.stop"), timeout=30, what="the upgrade's agent.stop")
        assert stops[0]["attributes"]["reason"] == "package upgrade"
        seqs = sorted(e["seq"] for e in collector.events(api))
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # contiguous: none lost over the upgrade

        # 5. Purge: the uninstall is reported, then nothing is left behind.
        done = root.run("dpkg", "--purge", "shoumi-agent")
        assert done.returncode == 0, done.stdout + done.stderr
        assert agent.wait(timeout=60) == 0
        eventually(lambda: any(e["attributes"].get("reason") == "package removal"
                               for e in _events(collector, api, "agent.stop")), timeout=30, what="the removal's agent.stop")
        for gone in ("/opt/shoumi-agent", "/var/lib/shoumi-agent", "/etc/shoumi-agent",
                     "/lib/systemd/system/shoumi-agent.service", "/usr/lib/sysctl.d/60-shoumi-agent.conf"):
            assert not root.exists(gone), gone
        assert root.run("dpkg", "-s", "shoumi-agent").returncode != 0
    finally:
        if agent is not None and agent.poll() is None:
            stop(agent)
        if collector.proc is not None and collector.proc.poll() is None:
            collector.stop()


@pytest.mark.root
def test_collector_package_installs_serves_as_its_own_user_and_purge_keeps_the_evidence(dist: Path, root: Root,
                                                                                        tmp_path: Path) -> None:
    deb = _deb(dist, "shoumi-collector")
    shutil.copy(deb, root.path / "tmp" / deb.name)
    done = root.run("dpkg", "-i", f"/tmp/{deb.name}")
    assert done.returncode == 0, done.stdout + done.stderr
    user = root.run("getent", "passwd", "shoumi-collector").stdout.split(":")
    assert user[0] == "shoumi-collector" and int(user[2]) < 1000  # a system user
    data = (root.path / "var/lib/shoumi-collector").stat()
    assert data.st_uid == int(user[2]) and oct(data.st_mode & 0o777) == "0o700"
    env = (root.path / "etc/shoumi-collector/collector.env").stat()
    assert oct(env.st_mode & 0o777) == "0o640" and env.st_uid == 0
    log = tmp_path / "collector.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            ["/usr/sbin/chroot", "--userspec=shoumi-collector:shoumi-collector", str(root.path),
             "/opt/shoumi-collector/bin/shoumi-collector", "serve", "--data-dir", "/var/lib/shoumi-collector",
             "--grpc-listen", "127.0.0.1:0", "--enroll-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
            stdout=out, stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin", "HOME": "/var/lib/shoumi-collector"})
    try:
        addr = root.path / "var/lib/shoumi-collector/collector.addr.json"
        eventually(lambda: addr.exists() or serve.poll() is not None, timeout=90, what="the installed collector")
        assert serve.poll() is None, log.read_text()
        import urllib.request

        with urllib.request.urlopen(json.loads(addr.read_text())["http"] + "/healthz", timeout=10) as reply:
            assert reply.status == 200
    finally:
        assert stop(serve) == 0
    assert (root.path / "var/lib/shoumi-collector/pki").is_dir()  # its CA, made as its own user
    done = root.run("dpkg", "--purge", "shoumi-collector")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is kept" in done.stderr
    assert not root.exists("/etc/shoumi-collector") and not root.exists("/opt/shoumi-collector")
    assert root.run("getent", "passwd", "shoumi-collector").returncode != 0
    assert root.exists("/var/lib/shoumi-collector/pki")  # evidence and keys stay
