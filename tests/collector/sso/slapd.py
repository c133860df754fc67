"""A real OpenLDAP slapd (Debian's) as a child process on a loopback port, its config and data in a tmp folder.

People under ou=people,dc=example,dc=com, groups (groupOfNames) under ou=groups whose members get a
``memberOf`` from slapd's memberof overlay, as Active Directory gives one; a read-only service account.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

SLAPD = "/usr/sbin/slapd"
BASE = "dc=example,dc=com"
READER_DN = f"cn=reader,{BASE}"
READER_PASSWORD = "reader-password-1"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PASSWORD = "root-password-1"
PEOPLE = {  # uid -> (password, groups)
    "li.hua": ("correct horse battery", ["shoumi-hr"]),
    "wang.wei": ("p*ss(word)\\ with )(| chars", ["shoumi-security"]),
    "zhao.lei": ("nobody maps me 1", ["staff"]),
}

_CONF = """include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
access to attrs=userPassword by self =w by anonymous auth by * none
access to * by * read
database mdb
maxsize 16777216
suffix "{base}"
rootdn "{root}"
rootpw {rootpw}
directory {dir}/data
overlay memberof
"""


def _ldif() -> str:
    out = [f"dn: {BASE}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
           f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\n"
           f"userPassword: {READER_PASSWORD}\n",
           f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n",
           f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n"]
    for uid, (password, _) in PEOPLE.items():
        out.append(f"dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
                   f"userPassword: {password}\n")
    groups: dict[str, list[str]] = {}
    for uid, (_, names) in PEOPLE.items():
        for name in names:
            groups.setdefault(name, []).append(uid)
    for name, members in groups.items():
        lines = "".join(f"member: uid={m},ou=people,{BASE}\n" for m in members)
        out.append(f"dn: cn={name},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {name}\n{lines}")
    return "\n".join(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Slapd:
    """slapd started in ``folder``; ``url`` once it answers."""

    def __init__(self, folder: Path) -> None:
        if not Path(SLAPD).exists() or shutil.which("ldapadd") is None:
            pytest.skip("Debian's slapd and ldap-utils are not installed (apt-get install slapd ldap-utils, as .ci/run does)")
        self.folder = folder
        (folder / "data").mkdir(parents=True)
        (folder / "slapd.conf").write_text(_CONF.format(dir=folder, base=BASE, root=ROOT_DN, rootpw=ROOT_PASSWORD))
        self.port = _free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.log = open(folder / "slapd.log", "wb")
        self.proc = subprocess.Popen([SLAPD, "-f", str(folder / "slapd.conf"), "-h", f"{self.url}/", "-d", "256"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"slapd exited: {(folder / 'slapd.log').read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("slapd did not listen within 20 s")
                time.sleep(0.05)
        (folder / "data.ldif").write_text(_ldif())
        done = subprocess.run(["ldapadd", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, "-f",
                               str(folder / "data.ldif")], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            self.stop()
            raise AssertionError(f"ldapadd failed: {done.stderr}")

    def searches(self) -> list[str]:
        """The search filters slapd logged (-d 256: stats), in order."""
        text = (self.folder / "slapd.log").read_text(errors="replace")
        return [line.split('filter="', 1)[1].rsplit('"', 1)[0] for line in text.splitlines() if 'filter="' in line]

    def binds(self) -> list[str]:
        """The bind lines slapd logged."""
        return [line for line in (self.folder / "slapd.log").read_text(errors="replace").splitlines() if " BIND " in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
