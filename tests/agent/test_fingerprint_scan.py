"""Fingerprinting real files, special files, archives and sensitive folders on disk."""

from __future__ import annotations

import io
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.fingerprint import fingerprint_bytes
from agent.core.index import FingerprintIndex
from agent.fingerprint_scan import (
    SKIP_REASONS,
    ArchiveLimits,
    ScanSkipped,
    build_index,
    find_copies,
    scan_archive,
    scan_file,
)
from agent.policy import SensitiveFolderPolicy

MAX = 256 * 1024 * 1024


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="shoumi-scan-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def skip_reason(path: str | bytes | Path, **kwargs: int) -> str:
    with pytest.raises(ScanSkipped) as info:
        scan_file(path, max_bytes=kwargs.get("max_bytes", MAX))
    assert info.value.reason in SKIP_REASONS
    return info.value.reason


def test_regular_file_fingerprint_matches_in_memory(tmp_path: Path) -> None:
    data = random_bytes(1, 300_000)
    (tmp_path / "f").write_bytes(data)
    scanned = scan_file(tmp_path / "f", max_bytes=MAX)
    assert scanned.fingerprint == fingerprint_bytes(data)
    assert scanned.size == len(data)
    assert not scanned.truncated
    assert scanned.path == str(tmp_path / "f")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e").write_bytes(b"")
    scanned = scan_file(tmp_path / "e", max_bytes=MAX)
    assert scanned.fingerprint.size == 0 and not scanned.truncated


def test_huge_file_is_bounded(tmp_path: Path) -> None:
    data = random_bytes(2, 200_000)
    (tmp_path / "big").write_bytes(data)
    scanned = scan_file(tmp_path / "big", max_bytes=50_000)
    assert scanned.truncated
    assert scanned.size == 200_000
    assert scanned.fingerprint.size == 50_000
    assert scanned.fingerprint.sha256 == fingerprint_bytes(data[:50_000]).sha256
    # Exactly at the bound is complete.
    assert not scan_file(tmp_path / "big", max_bytes=200_000).truncated


def test_sparse_file_of_a_terabyte_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(1 << 40)
    scanned = scan_file(path, max_bytes=1 << 20)
    assert scanned.truncated and scanned.fingerprint.size == 1 << 20


def test_missing_file_is_vanished(tmp_path: Path) -> None:
    assert skip_reason(tmp_path / "nope") == "vanished"
    assert skip_reason(tmp_path / "nope" / "deeper") == "vanished"


def test_fifo_is_skipped_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    assert skip_reason(tmp_path / "fifo") == "not_regular"


def test_socket_device_and_directory_are_skipped(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock"))
        assert skip_reason(tmp_path / "sock") == "not_regular"
    finally:
        sock.close()
    assert skip_reason("/dev/null") == "not_regular"
    assert skip_reason("/dev/zero") == "not_regular"
    assert skip_reason(tmp_path) == "not_regular"


def test_symlink_is_never_followed(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert skip_reason(tmp_path / "link") == "symlink"
    (tmp_path / "fifo-link").symlink_to("/dev/zero")
    assert skip_reason(tmp_path / "fifo-link") == "symlink"


def test_invalid_utf8_name(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/r\xe9sum\xe9-\xff.txt"
    with open(raw, "wb") as f:
        f.write(b"content")
    scanned = scan_file(raw, max_bytes=MAX)
    assert os.fsencode(scanned.path) == raw
    assert scanned.fingerprint.size == 7


def test_unreadable_file_as_another_user(open_tmp: Path) -> None:
    secret = open_tmp / "secret"
    secret.write_bytes(b"top secret")
    secret.chmod(0o600)
    code = (
        "from agent.fingerprint_scan import scan_file, ScanSkipped\n"
        "try:\n"
        f"    scan_file({str(secret)!r}, max_bytes=100)\n"
        "except ScanSkipped as e:\n"
        "    print(e.reason)\n"
    )
    if os.geteuid() != 0:
        pytest.skip("needs root to run the scan as another user with setpriv")
    run = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, cwd="/",
    )
    if "No module named" in run.stderr or "Permission denied" in run.stderr:
        pytest.skip(f"the interpreter is not usable by nobody here: {run.stderr.strip()[-200:]}")
    assert run.stdout.strip() == "unreadable", run.stderr


def test_file_written_while_hashed_is_reported_changed(tmp_path: Path) -> None:
    path = tmp_path / "growing"
    path.write_bytes(random_bytes(3, 3 * 1024 * 1024))
    stop = threading.Event()

    def append() -> None:
        with open(path, "ab") as f:
            while not stop.is_set():
                f.write(b"x")
                f.flush()

    writer = threading.Thread(target=append)
    writer.start()
    try:
        assert skip_reason(path) == "changed"
    finally:
        stop.set()
        writer.join()


def test_file_deleted_after_open_is_still_hashed_from_its_descriptor(tmp_path: Path) -> None:
    # What "vanishing while hashed" means on Linux: the open descriptor keeps the content, so the
    # fingerprint is of what was there; only a vanish before open is a skip (tested above).
    data = random_bytes(4, 100_000)
    path = tmp_path / "v"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        assert skip_reason(path) == "vanished"
        assert os.read(fd, 10) == data[:10]
    finally:
        os.close(fd)


def make_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)


def make_tar(path: Path, members: dict[str, bytes], mode: str) -> None:
    with tarfile.open(path, mode) as t:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("suffix", "maker"),
    [
        (".zip", lambda p, m: make_zip(p, m)),
        (".zip", lambda p, m: make_zip(p, m, zipfile.ZIP_STORED)),
        (".tar", lambda p, m: make_tar(p, m, "w")),
        (".tar.gz", lambda p, m: make_tar(p, m, "w:gz")),
        (".tgz", lambda p, m: make_tar(p, m, "w:gz")),
        (".tar.xz", lambda p, m: make_tar(p, m, "w:xz")),
    ],
)
def test_archive_members_are_fingerprinted(tmp_path: Path, suffix: str, maker: object) -> None:
    members = {"a.txt": random_bytes(5, 70_000), "../../etc/evil": b"traversal", "dir/b": b""}
    path = tmp_path / f"x{suffix}"
    maker(path, members)  # type: ignore[operator]
    scanned = scan_archive(path)
    assert {m.name: m.fingerprint for m in scanned} == {
        name: fingerprint_bytes(data) for name, data in members.items()
    }
    # Nothing was extracted anywhere.
    assert sorted(os.listdir(tmp_path)) == [f"x{suffix}"]
    assert not Path("/etc/evil").exists()


def test_zip_bomb_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("zeros", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(300):  # 300 MiB of zeros, ~300 KiB on disk
                member.write(block)
        z.writestr("after", b"small")
    assert path.stat().st_size < 2 << 20
    limits = ArchiveLimits(max_member_bytes=1 << 20, max_total_bytes=2 << 20)
    scanned = {m.name: m.fingerprint for m in scan_archive(path, limits=limits)}
    assert scanned["zeros"].size == 1 << 20 and not scanned["zeros"].complete
    assert scanned["after"] == fingerprint_bytes(b"small")


def test_gzip_tar_bomb_stops_at_the_total_budget(tmp_path: Path) -> None:
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for i in range(3):
            info = tarfile.TarInfo(f"zeros{i}")
            info.size = 100 << 20
            t.addfile(info, io.BytesIO(bytes(100 << 20)))
    limits = ArchiveLimits(max_member_bytes=1 << 20, max_total_bytes=8 << 20)
    scanned = scan_archive(path, limits=limits)
    # The first member's end lies past twice the budget: nothing further is decompressed.
    assert [m.name for m in scanned] == ["zeros0"]
    assert scanned[0].fingerprint.size == 1 << 20


def test_member_count_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    make_zip(path, {f"m{i}": b"%d" % i for i in range(50)})
    assert len(scan_archive(path, limits=ArchiveLimits(max_members=10))) == 10


def test_corrupt_and_non_archives(tmp_path: Path) -> None:
    (tmp_path / "plain.zip").write_bytes(b"not an archive at all")
    with pytest.raises(ScanSkipped) as info:
        scan_archive(tmp_path / "plain.zip")
    assert info.value.reason == "not_archive"
    good = tmp_path / "good.zip"
    make_zip(good, {"a": random_bytes(6, 10_000)})
    (tmp_path / "cut.zip").write_bytes(good.read_bytes()[:-30])
    with pytest.raises(ScanSkipped) as info:
        scan_archive(tmp_path / "cut.zip")
    assert info.value.reason == "bad_archive"
    (tmp_path / "cut.tgz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    with pytest.raises(ScanSkipped) as info:
        scan_archive(tmp_path / "cut.tgz")
    assert info.value.reason == "bad_archive"


def test_encrypted_zip_member_is_left_out(tmp_path: Path) -> None:
    if shutil.which("zip") is None:
        pytest.skip("needs the zip tool to make an encrypted zip")
    (tmp_path / "s").write_bytes(b"secret")
    subprocess.run(["zip", "-q", "-P", "pw", str(tmp_path / "e.zip"), "s"], cwd=tmp_path, check=True)
    assert scan_archive(tmp_path / "e.zip") == []


@pytest.fixture
def sensitive_tree(tmp_path: Path) -> tuple[SensitiveFolderPolicy, dict[str, bytes]]:
    contracts = tmp_path / "home" / "alice" / "Contracts"
    (contracts / "sub").mkdir(parents=True)
    files = {
        str(contracts / "nda.pdf"): random_bytes(10, 120_000),
        str(contracts / "sub" / "terms.txt"): random_bytes(11, 40_000),
        str(contracts / "tiny.txt"): b"signed",
    }
    for path, data in files.items():
        Path(path).write_bytes(data)
    (contracts / "nda.pdf.swp").write_bytes(random_bytes(12, 1000))
    os.mkfifo(contracts / "pipe")
    (contracts / "link").symlink_to("/etc/hostname")
    policy = SensitiveFolderPolicy(
        sensitive_folders=(f"{tmp_path}/home/*/Contracts",), exclude_paths=("*.swp",),
        partial_match_share=0.5,
    )
    return policy, files


def test_build_index_scans_sensitive_folders(
    sensitive_tree: tuple[SensitiveFolderPolicy, dict[str, bytes]]
) -> None:
    policy, files = sensitive_tree
    build = build_index(policy)
    assert build.index.paths() == sorted(files)
    assert build.indexed == 3
    assert build.excluded == 1
    assert build.skipped == {"not_regular": 1, "symlink": 1}
    assert build.index.min_share == 0.5


def test_find_copies_whole_partial_and_archive(
    tmp_path: Path, sensitive_tree: tuple[SensitiveFolderPolicy, dict[str, bytes]]
) -> None:
    policy, files = sensitive_tree
    index = build_index(policy).index
    nda_path = next(p for p in files if p.endswith("nda.pdf"))
    nda = files[nda_path]
    out = tmp_path / "out"
    out.mkdir()

    shutil.copyfile(nda_path, out / "copy.pdf")
    _, matches = find_copies(index, out / "copy.pdf", max_bytes=MAX)
    assert [(m.source_path, m.kind, m.share) for m in matches] == [(nda_path, "exact", 1.0)]

    (out / "part.bin").write_bytes(nda[: len(nda) * 3 // 4])
    _, matches = find_copies(index, out / "part.bin", max_bytes=MAX)
    assert [(m.source_path, m.kind) for m in matches] == [(nda_path, "partial")]
    assert 0.5 <= matches[0].share < 1.0

    make_zip(out / "backup.dat", {"docs/nda.pdf": nda, "other": random_bytes(13, 5000)})
    _, matches = find_copies(index, out / "backup.dat", max_bytes=MAX)
    assert [(m.source_path, m.kind, m.share, m.member) for m in matches] == [
        (nda_path, "archive", 1.0, "docs/nda.pdf")
    ]

    tiny_path = next(p for p in files if p.endswith("tiny.txt"))
    make_tar(out / "t.tgz", {"x/tiny.txt": b"signed"}, "w:gz")
    _, matches = find_copies(index, out / "t.tgz", max_bytes=MAX)
    assert [(m.source_path, m.kind, m.member) for m in matches] == [
        (tiny_path, "archive", "x/tiny.txt")
    ]

    (out / "unrelated").write_bytes(random_bytes(99, 100_000))
    assert find_copies(index, out / "unrelated", max_bytes=MAX)[1] == []


def test_a_source_does_not_match_itself(
    sensitive_tree: tuple[SensitiveFolderPolicy, dict[str, bytes]]
) -> None:
    policy, files = sensitive_tree
    index = build_index(policy).index
    nda_path = next(p for p in files if p.endswith("nda.pdf"))
    assert find_copies(index, nda_path, max_bytes=MAX)[1] == []


def test_find_copies_skips_special_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ScanSkipped):
        find_copies(FingerprintIndex(), tmp_path / "fifo", max_bytes=MAX)


@pytest.mark.parametrize("size", [10 * 1024, 70 * 1024, 300 * 1024, 1024 * 1024])
def test_sixty_percent_of_an_office_sized_file_is_a_copy(tmp_path: Path, size: int) -> None:
    """The issue's case: the first 60 % of a 70 KB document, with partial_match_share = 0.5."""
    from agent.core.fingerprint import FINE_MAX

    folder, out = tmp_path / "finance", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    data = random_bytes(size, size)
    (folder / "offer.docx").write_bytes(data)
    policy = SensitiveFolderPolicy(sensitive_folders=(str(folder),), partial_match_share=0.5)
    index = build_index(policy).index
    n = size * 6 // 10
    (out / "excerpt.docx").write_bytes(data[:n])
    _, matches = find_copies(index, out / "excerpt.docx", max_bytes=MAX)
    [match] = matches
    assert match.source_path == str(folder / "offer.docx") and match.kind == "partial"
    assert match.dest_share >= 1 - FINE_MAX / n  # the bound the module docstring proves
    assert match.share <= n / size + 1e-9


@settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), size=st.integers(10 * 1024, 1024 * 1024), cut=st.floats(0.0, 1.0))
def test_a_prefix_of_a_small_file_keeps_the_fine_bound(tmp_path: Path, seed: int, size: int, cut: float) -> None:
    from agent.core.fingerprint import FINE_MAX

    folder = Path(tempfile.mkdtemp(dir=tmp_path)) / "finance"
    folder.mkdir()
    data = random_bytes(seed, size)
    (folder / "src").write_bytes(data)
    index = build_index(SensitiveFolderPolicy(sensitive_folders=(str(folder),), partial_match_share=0.0)).index
    n = max(1, int(size * cut))
    (folder.parent / f"copy-{seed}").write_bytes(data[:n])
    _, matches = find_copies(index, folder.parent / f"copy-{seed}", max_bytes=MAX, min_share=0.0)
    if n >= 2 * FINE_MAX:
        [match] = matches
        assert match.dest_share >= 1 - FINE_MAX / n
    assert all(m.share <= n / size + 1e-9 for m in matches)


def _archive_bytes(kind: str, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    if kind.startswith("zip"):
        compression = zipfile.ZIP_STORED if kind == "zip-stored" else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(buf, "w", compression=compression) as z:
            for name, data in members.items():
                z.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz" if kind == "tar.gz" else "w") as t:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["zip-stored", "zip-deflated", "tar", "tar.gz"])
def test_an_archive_names_the_member_before_any_whole_file_match(tmp_path: Path, kind: str) -> None:
    """A stored zip of a sensitive file used to be a 0.91 "partial" of the zip: members come first."""
    folder, out = tmp_path / "finance", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    nda = random_bytes(3, 300_000)
    (folder / "nda.pdf").write_bytes(nda)
    index = build_index(SensitiveFolderPolicy(sensitive_folders=(str(folder),))).index
    (out / "backup").write_bytes(_archive_bytes(kind, {"docs/nda.pdf": nda, "readme.txt": b"hello"}))
    _, matches = find_copies(index, out / "backup", max_bytes=MAX)
    assert [(m.source_path, m.kind, m.member, m.share) for m in matches] == [
        (str(folder / "nda.pdf"), "archive", "docs/nda.pdf", 1.0)]


@pytest.mark.parametrize("outer,inner", [("zip-deflated", "zip-stored"), ("tar.gz", "zip-deflated"),
                                         ("zip-stored", "tar.gz"), ("tar", "tar")])
def test_one_level_of_nesting_is_read(tmp_path: Path, outer: str, inner: str) -> None:
    folder, out = tmp_path / "finance", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    plan = random_bytes(4, 200_000)
    (folder / "plan.xlsx").write_bytes(plan)
    index = build_index(SensitiveFolderPolicy(sensitive_folders=(str(folder),))).index
    nested = _archive_bytes(inner, {"q3/plan.xlsx": plan[:150_000]})  # most of it, in an inner archive
    (out / "outer").write_bytes(_archive_bytes(outer, {"inner.bin": nested, "n.txt": b"x"}))
    _, matches = find_copies(index, out / "outer", max_bytes=MAX)
    [match] = matches
    assert (match.source_path, match.kind, match.member) == (str(folder / "plan.xlsx"), "archive", "inner.bin/q3/plan.xlsx")
    assert match.dest_share >= (150_000 - 64 * 1024) / 150_000  # the prefix bound, for the member
