"""Hostile bundles: each refused with a clear message and exit 1, and nothing written anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from shoumi_verify import archive
from shoumi_verify.archive import ArchiveError, read_members

from tests.collector.evidence.world import build_case, export
from tests.verify.tamper import raw_zip, zip_bytes

VERIFY = str(Path(sys.executable).parent / "shoumi-verify")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, bytes]]:
    w = build_case(tmp_path_factory.mktemp("hostile") / "collector", batches=2)
    try:
        yield export(w).members
    finally:
        w.store.close()


def _run(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    before = sorted(os.listdir(cwd))
    done = subprocess.run([VERIFY, str(path), "--lang", "en"], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**os.environ, "TMPDIR": str(cwd)})
    assert sorted(os.listdir(cwd)) == before, "the verifier wrote something"
    return done


def _entries(bundle: dict[str, bytes]) -> list[tuple[str, bytes]]:
    return sorted(bundle.items())


HOSTILE: list[tuple[str, object, str]] = [
    ("not a zip", lambda b: b"%PDF-1.7 this is not a zip at all", "not a zip archive"),
    ("an empty file", lambda b: b"", "not a zip archive"),
    ("a truncated zip", lambda b: zip_bytes(b)[:200], "not a zip archive"),
    ("an absolute path", lambda b: raw_zip(_entries(b) + [("/etc/passwd", b"x")]), "unsafe name '/etc/passwd'"),
    ("a dot-dot path", lambda b: raw_zip(_entries(b) + [("../../escape.txt", b"x")]), "unsafe name '../../escape.txt'"),
    ("a nested dot-dot", lambda b: raw_zip(_entries(b) + [("tree/../../x", b"x")]), "unsafe name"),
    ("a backslash path", lambda b: raw_zip(_entries(b) + [("..\\evil.txt", b"x")]), "unsafe name"),
    ("a drive letter", lambda b: raw_zip(_entries(b) + [("C:/evil.txt", b"x")]), "unsafe name"),
    ("a duplicated member", lambda b: raw_zip(_entries(b) + [("events.json", b"[]")]), "holds the name 'events.json' twice"),
    ("a member the manifest names is missing",
     lambda b: raw_zip([(k, v) for k, v in _entries(b) if k != "audit.json"]), "names 'audit.json', which is not in the zip"),
    ("an extra member", lambda b: raw_zip(_entries(b) + [("extra.txt", b"hello")]), "'extra.txt' is in the zip but not"),
    ("a zip bomb", lambda b: raw_zip(_entries(b) + [("bomb.bin", bytes(30 << 20))]), "looks like a zip bomb"),
    ("no manifest", lambda b: raw_zip([(k, v) for k, v in _entries(b) if k != "manifest.json"]), "has no manifest.json"),
]


@pytest.mark.parametrize("what,make,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_bundle_is_refused_clearly(bundle: dict[str, bytes], tmp_path: Path, what: str, make: object,
                                             message: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    path = tmp_path / "bundle.zip"
    path.write_bytes(make(bundle))  # type: ignore[operator]
    done = _run(path, work)
    assert done.returncode == 1, (what, done.stdout, done.stderr)
    assert message in done.stdout, done.stdout
    assert "Traceback" not in done.stderr


def test_a_symlink_member_is_refused(bundle: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("evil-link")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError) as caught:
        read_members(path)
    assert caught.value.code == "archive.not_file"


def test_too_many_members_and_too_many_bytes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    path.write_bytes(raw_zip([(f"m{i}", b"x") for i in range(30)]))
    monkeypatch.setattr(archive, "MAX_MEMBERS", 20)
    with pytest.raises(ArchiveError) as caught:
        read_members(path)
    assert caught.value.code == "archive.too_many"
    monkeypatch.setattr(archive, "MAX_MEMBERS", 20_000)
    monkeypatch.setattr(archive, "MAX_TOTAL", 10)
    with pytest.raises(ArchiveError) as caught:
        read_members(path)
    assert caught.value.code == "archive.bomb"


def test_a_member_that_inflates_beyond_its_declared_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lying.zip"
    path.write_bytes(raw_zip([("a.bin", bytes(5000))]))
    data = bytearray(path.read_bytes())
    # the central directory's uncompressed size of the one member (offset 24 in its record): say 100
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError) as caught:
        read_members(path)
    assert caught.value.code == "archive.corrupt"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = subprocess.run([VERIFY, str(tmp_path / "nope.zip")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    (tmp_path / "b.zip").write_bytes(b"x")
    bad_key = subprocess.run([VERIFY, str(tmp_path / "b.zip"), "--witness-key", "zz"], capture_output=True, text=True,
                             timeout=60)
    assert bad_key.returncode == 2 and "shoumi-verify:" in bad_key.stderr
    no_args = subprocess.run([VERIFY], capture_output=True, text=True, timeout=60)
    assert no_args.returncode == 2
