"""The [policy] table: parsing, refusals, round trip, and path questions on real directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.policy import (
    DEFAULT_MAX_HASH_BYTES,
    DEFAULT_PARTIAL_MATCH_SHARE,
    PolicyError,
    SensitiveFolderPolicy,
    load_policy,
)

ISSUE_EXAMPLE = """
[policy]
sensitive_folders = ["/srv/finance", "/home/*/Contracts"]
destinations = ["/home", "/tmp"]          # where copies are looked for
removable_mounts = ["/media/stick"]       # treated as removable media, besides those detected
exclude_paths = ["*.swp", "*~"]
exclude_processes = ["backupd"]
max_hash_bytes = 268435456
partial_match_share = 0.5

[agent]
something_else = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_issue_example_parses(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, ISSUE_EXAMPLE))
    assert policy == SensitiveFolderPolicy(
        sensitive_folders=("/srv/finance", "/home/*/Contracts"),
        destinations=("/home", "/tmp"),
        removable_mounts=("/media/stick",),
        exclude_paths=("*.swp", "*~"),
        exclude_processes=("backupd",),
        max_hash_bytes=268435456,
        partial_match_share=0.5,
    )


def test_defaults(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, '[policy]\nsensitive_folders = ["/srv/x"]\n'))
    assert policy.max_hash_bytes == DEFAULT_MAX_HASH_BYTES == 268435456
    assert policy.partial_match_share == DEFAULT_PARTIAL_MATCH_SHARE == 0.5
    assert policy.destinations == ()


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('sensitive_folder = ["/srv"]', "sensitive_folder"),
        ('sensitive_folders = ["/srv/[abc"]', "sensitive_folders"),
        ('sensitive_folders = ["/srv/a]b"]', "sensitive_folders"),
        ('sensitive_folders = ["/srv/[]"]', "sensitive_folders"),
        ('sensitive_folders = ["relative/path"]', "sensitive_folders"),
        ('sensitive_folders = [""]', "sensitive_folders"),
        ('sensitive_folders = "/srv"', "sensitive_folders"),
        ("sensitive_folders = [1, 2]", "sensitive_folders"),
        ('exclude_paths = ["*.[sw"]', "exclude_paths"),
        ('destinations = ["tmp"]', "destinations"),
        ('removable_mounts = ["media"]', "removable_mounts"),
        ('exclude_processes = ["/usr/bin/x"]', "exclude_processes"),
        ('max_hash_bytes = "big"', "max_hash_bytes"),
        ("max_hash_bytes = 1.5", "max_hash_bytes"),
        ("max_hash_bytes = true", "max_hash_bytes"),
        ("max_hash_bytes = -1", "max_hash_bytes"),
        ("partial_match_share = 1.5", "partial_match_share"),
        ("partial_match_share = -0.1", "partial_match_share"),
        ('partial_match_share = "half"', "partial_match_share"),
        ("partial_match_share = nan", "partial_match_share"),
    ],
)
def test_bad_policy_is_a_clear_error(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, f"[policy]\n{body}\n"))
    assert info.value.key == key
    assert key in str(info.value)


def test_unreadable_and_invalid_files_are_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(write(tmp_path, "[policy\n"))
    with pytest.raises(PolicyError, match=r"no \[policy\] table"):
        load_policy(write(tmp_path, "[agent]\nx = 1\n"))


def test_share_bounds_are_inclusive() -> None:
    assert SensitiveFolderPolicy(partial_match_share=0).partial_match_share == 0.0
    assert SensitiveFolderPolicy(partial_match_share=1).partial_match_share == 1.0


def test_paths_are_normalised() -> None:
    policy = SensitiveFolderPolicy(sensitive_folders=("/srv/finance/",), destinations=("//tmp/./x",))
    assert policy.sensitive_folders == ("/srv/finance",)
    assert policy.destinations == ("/tmp/x",)


def test_is_sensitive_with_globs() -> None:
    policy = SensitiveFolderPolicy(sensitive_folders=("/srv/finance", "/home/*/Contracts"))
    assert policy.is_sensitive("/srv/finance")
    assert policy.is_sensitive("/srv/finance/2026/q1.xlsx")
    assert policy.is_sensitive("/home/alice/Contracts/nda.pdf")
    assert policy.is_sensitive(Path("/home/bob/Contracts"))
    assert policy.is_sensitive(b"/home/bob/Contracts/\xff\xfe.pdf")
    assert not policy.is_sensitive("/srv/finance-old/x")
    assert not policy.is_sensitive("/srv")
    # "*" matches one path component, never a slash.
    assert not policy.is_sensitive("/home/alice/work/Contracts/nda.pdf")
    assert not policy.is_sensitive("/home/alice/contracts/nda.pdf")
    assert policy.is_sensitive("/srv/finance/../finance/x")
    assert not policy.is_sensitive("/srv/finance/../public/x")


def test_is_excluded() -> None:
    policy = SensitiveFolderPolicy(exclude_paths=("*.swp", "*~", "/srv/finance/tmp/*"))
    assert policy.is_excluded("/srv/finance/.report.xlsx.swp")
    assert policy.is_excluded("/srv/finance/report.xlsx~")
    assert policy.is_excluded("/srv/finance/tmp/x")
    assert not policy.is_excluded("/srv/finance/report.xlsx")
    assert not policy.is_excluded("/srv/finance/swp/report")
    assert policy.is_excluded(b"/x/\xff.swp")


def test_process_and_destination_questions() -> None:
    policy = SensitiveFolderPolicy(
        destinations=("/home", "/tmp"), removable_mounts=("/media/stick",),
        exclude_processes=("backupd",),
    )
    assert policy.is_excluded_process("backupd")
    assert not policy.is_excluded_process("backup")
    assert policy.is_destination("/tmp/a")
    assert policy.is_destination("/media/stick/a/b")
    assert not policy.is_destination("/tmpfoo/a")
    assert not policy.is_destination("/srv/a")


def test_expand_sensitive_folders_on_real_directories(tmp_path: Path) -> None:
    for user in ("alice", "bob", "carol"):
        (tmp_path / "home" / user).mkdir(parents=True)
    (tmp_path / "home" / "alice" / "Contracts").mkdir()
    (tmp_path / "home" / "bob" / "Contracts").mkdir()
    # A file by that name is not a folder.
    (tmp_path / "home" / "carol" / "Contracts").write_text("not a dir")
    (tmp_path / "finance").mkdir()
    policy = SensitiveFolderPolicy(
        sensitive_folders=(
            f"{tmp_path}/home/*/Contracts", f"{tmp_path}/finance", f"{tmp_path}/absent",
        )
    )
    assert policy.expand_sensitive_folders() == (
        tmp_path / "finance",
        tmp_path / "home" / "alice" / "Contracts",
        tmp_path / "home" / "bob" / "Contracts",
    )


def test_policy_is_immutable_and_hashable() -> None:
    policy = SensitiveFolderPolicy(sensitive_folders=["/srv"])  # type: ignore[arg-type]
    assert policy.sensitive_folders == ("/srv",)
    with pytest.raises(AttributeError):
        policy.max_hash_bytes = 1  # type: ignore[misc]
    assert hash(policy) == hash(SensitiveFolderPolicy(sensitive_folders=("/srv",)))


def test_to_mapping_round_trip_of_issue_example(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, ISSUE_EXAMPLE))
    mapping = policy.to_mapping()
    assert mapping["sensitive_folders"] == ["/srv/finance", "/home/*/Contracts"]
    assert SensitiveFolderPolicy.from_mapping(mapping) == policy


_segment = st.text(alphabet="abcXYZ019_-.*?", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)
_abs_path = st.lists(_segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
# below a folder of its own: a one-part glob such as "/*" matches system directories and is refused
_sensitive_path = _abs_path.map(lambda path: "/data" + path)


@given(
    sensitive=st.lists(_sensitive_path, max_size=3),
    destinations=st.lists(_abs_path, max_size=3),
    excludes=st.lists(_segment, max_size=3),
    processes=st.lists(st.text(alphabet="abc-_", min_size=1, max_size=6), max_size=3),
    max_hash_bytes=st.integers(min_value=0, max_value=2**40),
    share=st.floats(min_value=0.0, max_value=1.0),
)
def test_from_mapping_inverts_to_mapping(
    sensitive: list[str], destinations: list[str], excludes: list[str], processes: list[str],
    max_hash_bytes: int, share: float,
) -> None:
    policy = SensitiveFolderPolicy(
        sensitive_folders=tuple(sensitive), destinations=tuple(destinations),
        exclude_paths=tuple(excludes), exclude_processes=tuple(processes),
        max_hash_bytes=max_hash_bytes, partial_match_share=share,
    )
    assert SensitiveFolderPolicy.from_mapping(policy.to_mapping()) == policy


def test_invalid_utf8_path_does_not_crash(tmp_path: Path) -> None:
    name = os.fsencode(str(tmp_path)) + b"/\xff\xfe"
    os.mkdir(name)
    policy = SensitiveFolderPolicy(sensitive_folders=(str(tmp_path),))
    assert policy.is_sensitive(name + b"/file")
