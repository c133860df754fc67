"""Policy documents as the collector pushes them: the one parser's refusals, company devices, and the
checks between a SignedPolicy and the runtime (signature, version order, the stored last good one)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from shoumi.signed_policy import document_sha256, sign_policy
from shoumi.v1 import events_pb2

from agent.identity import IdentityError, load_policy_key, pin_policy_key
from agent.policy import (MAX_LIST_ENTRIES, CompanyDevice, PolicyError, SensitiveFolderPolicy,
                          parse_policy_document)
from agent.policy_push import (PolicyRefused, PushedPolicyStore, check_pushed, local_policy,
                               pushed_identity)

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _signed(name: str, version: int, document: str, key: Ed25519PrivateKey = KEY) -> events_pb2.SignedPolicy:
    return sign_policy(name=name, version=version, issued_unix_ns=time.time_ns(), document=document.encode(),
                       key=key)


def test_a_document_with_or_without_its_policy_header_parses_alike() -> None:
    bare = parse_policy_document('sensitive_folders = ["/srv/finance"]\ndestinations = ["/tmp"]\n')
    wrapped = parse_policy_document(b'[policy]\nsensitive_folders = ["/srv/finance"]\ndestinations = ["/tmp"]\n')
    assert bare == wrapped == SensitiveFolderPolicy(sensitive_folders=("/srv/finance",), destinations=("/tmp",))


@pytest.mark.parametrize(("document", "key", "words"), [
    ('destinations = ["/tmp"]', "sensitive_folders", "names no sensitive folder"),
    ('sensitive_folders = []', "sensitive_folders", "names no sensitive folder"),
    ('sensitive_folders = ["/"]', "sensitive_folders", "far too broad"),
    ('sensitive_folders = ["/*"]', "sensitive_folders", "far too broad"),
    ('sensitive_folders = ["/u*"]', "sensitive_folders", "matches /usr"),
    ('sensitive_folders = ["/home"]', "sensitive_folders", "matches /home"),
    ('sensitive_folders = ["//"]', "sensitive_folders", "far too broad"),
    ('sensitive_folders = ["/proc/1/fd"]', "sensitive_folders", "the kernel's"),
    ('sensitive_folders = ["/srv/x"]\ndestinations = ["/"]', "destinations", "whole filesystem"),
    ('sensitive_folders = ["/srv/[x"]', "sensitive_folders", "unclosed"),
    ('sensitive_folders = ["/srv/x"]\nsensitive_folderz = ["/a"]', "sensitive_folderz", "unknown key"),
    ('[policy]\nsensitive_folders = ["/srv/x"]\n[agent]\nx = 1', "agent", "unknown key"),
    ('sensitive_folders = ["/srv/x"', "", "not valid TOML"),
    ('sensitive_folders = ["/srv/x"]\ncompany_devices = [{vendor_id = "0781", product_id = "5567"}]',
     "company_devices.serial", "missing"),
    ('sensitive_folders = ["/srv/x"]\ncompany_devices = [{vendor_id = "sandisk", product_id = "5567", serial = "1"}]',
     "company_devices.vendor_id", "4 hex digits"),
    ('sensitive_folders = ["/srv/x"]\ncompany_devices = [{vendor_id = "0781", product_id = "5567", serial = "1", '
     'colour = "red"}]', "company_devices.colour", "unknown key"),
    ('sensitive_folders = ["/srv/x"]\ncompany_devices = ["0781:5567"]', "company_devices", "table"),
])
def test_bad_documents_are_refused_naming_the_key(document: str, key: str, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_document(document)
    assert info.value.key == key and words in info.value.reason


def test_a_folder_list_of_100000_entries_is_refused_with_the_bound() -> None:
    folders = [f"/s/{i:x}" for i in range(100_000)]  # short enough for the document's bound: the list's is met
    with pytest.raises(PolicyError) as info:
        parse_policy_document("sensitive_folders = " + json.dumps(folders, separators=(",", ":")))
    assert info.value.key == "sensitive_folders"
    assert f"100000 entries; at most {MAX_LIST_ENTRIES}" in info.value.reason
    with pytest.raises(PolicyError, match="at most 1048576 bytes"):  # longer names: the document's bound first
        parse_policy_document("sensitive_folders = " + json.dumps([f"/srv/folder-{i}" for i in range(100_000)]))
    assert parse_policy_document("sensitive_folders = " + json.dumps(folders[:MAX_LIST_ENTRIES])).sensitive_folders
    with pytest.raises(PolicyError, match="at most"):
        parse_policy_document("x" * (2 << 20))
    with pytest.raises(PolicyError, match="not UTF-8"):
        parse_policy_document(b'sensitive_folders = ["/srv/\xff"]')


def test_company_devices_parse_normalise_and_match() -> None:
    policy = parse_policy_document(
        'sensitive_folders = ["/srv/x"]\n'
        'company_devices = [{vendor_id = "0x0781", product_id = "55AB", serial = " 4C530001 "}]\n')
    assert policy.company_devices == (CompanyDevice("0781", "55ab", "4C530001"),)
    assert policy.is_company_device("0781", "55AB", "4C530001")
    assert not policy.is_company_device("0781", "55ab", "4C530002")
    assert not policy.is_company_device("0781", "55ab", "")
    assert SensitiveFolderPolicy.from_mapping(policy.to_mapping()) == policy


@given(st.lists(st.sampled_from(["usr", "etc", "*", "?sr", "[eu]*", "home", "var", "[!x]*"]), min_size=1, max_size=1))
def test_no_one_part_glob_matching_a_system_directory_is_accepted(parts: list[str]) -> None:
    with pytest.raises(PolicyError):
        SensitiveFolderPolicy(sensitive_folders=("/" + parts[0],))


def test_check_pushed_verifies_orders_and_parses() -> None:
    local = local_policy(SensitiveFolderPolicy(sensitive_folders=("/srv/a",)))
    assert local.identity == local_policy(SensitiveFolderPolicy(sensitive_folders=("/srv/a",))).identity
    v3 = check_pushed(_signed("finance", 3, 'sensitive_folders = ["/srv/b"]'), public_key=PUB, in_force=local)
    assert (v3.name, v3.version, v3.source) == ("finance", 3, "collector")
    assert v3.sha256 == document_sha256(b'sensitive_folders = ["/srv/b"]')
    with pytest.raises(PolicyRefused, match="no collector policy key is pinned"):
        check_pushed(_signed("finance", 3, 'sensitive_folders = ["/srv/b"]'), public_key=None, in_force=local)
    with pytest.raises(PolicyRefused, match="signature"):
        check_pushed(_signed("finance", 3, 'sensitive_folders = ["/srv/b"]', key=Ed25519PrivateKey.generate()),
                     public_key=PUB, in_force=local)
    renamed = _signed("finance", 4, 'sensitive_folders = ["/srv/b"]')
    renamed.name = "legal"
    with pytest.raises(PolicyRefused, match="signature"):
        check_pushed(renamed, public_key=PUB, in_force=local)
    with pytest.raises(PolicyRefused, match="older than the applied version 3"):
        check_pushed(_signed("finance", 2, 'sensitive_folders = ["/srv/c"]'), public_key=PUB, in_force=v3)
    with pytest.raises(PolicyRefused, match="already applied with another document"):
        check_pushed(_signed("finance", 3, 'sensitive_folders = ["/srv/c"]'), public_key=PUB, in_force=v3)
    # another name is a reassignment: a lower version is fine
    assert check_pushed(_signed("legal", 1, 'sensitive_folders = ["/srv/c"]'), public_key=PUB, in_force=v3).name == "legal"
    with pytest.raises(PolicyRefused, match="names no sensitive folder"):
        check_pushed(_signed("finance", 9, 'destinations = ["/tmp"]'), public_key=PUB, in_force=v3)


def test_the_store_keeps_the_signature_and_reverifies(tmp_path: Path) -> None:
    store = PushedPolicyStore(tmp_path)
    assert store.load() is None and store.load_in_force(PUB) == (None, None, ("", 0, ""))
    pushed = _signed("finance", 7, '[policy]\nsensitive_folders = ["/srv/财务"]\n')
    store.save(pushed)
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert store.load() == pushed
    in_force, reason, ident = store.load_in_force(PUB)
    assert in_force is not None and reason is None and ident == pushed_identity(pushed) == in_force.identity
    assert store.load_in_force(None)[1] is not None  # key gone: not used
    raw = json.loads(store.path.read_text())
    raw["document"] = raw["document"].replace("财务", "hr")
    store.path.write_text(json.dumps(raw))
    in_force, reason, _ = store.load_in_force(PUB)
    assert in_force is None and reason is not None and "signature" in reason
    store.path.write_text("{")
    assert store.load_in_force(PUB)[1] is not None and "unreadable" in str(store.load_in_force(PUB)[1])


def test_pinning_the_policy_key(tmp_path: Path) -> None:
    assert load_policy_key(tmp_path) is None
    PushedPolicyStore(tmp_path).save(_signed("finance", 1, 'sensitive_folders = ["/srv/b"]'))
    pin_policy_key(tmp_path, PUB)
    assert load_policy_key(tmp_path) == PUB
    assert not PushedPolicyStore(tmp_path).path.exists()  # a new enrollment drops the old collector's policy
    assert (tmp_path / "policy_key.pub").stat().st_mode & 0o777 == 0o600
    with pytest.raises(IdentityError):
        pin_policy_key(tmp_path, b"short")
    pin_policy_key(tmp_path, b"")
    assert load_policy_key(tmp_path) is None
    (tmp_path / "policy_key.pub").write_text("zz")
    with pytest.raises(IdentityError, match="corrupt"):
        load_policy_key(tmp_path)


_toml_value = st.recursive(
    st.one_of(st.text(max_size=12), st.integers(), st.floats(allow_nan=False), st.booleans()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["vendor_id", "product_id", "serial", "x"]), inner, max_size=3), max_leaves=8)
_keys = st.sampled_from(["sensitive_folders", "destinations", "removable_mounts", "exclude_paths",
                         "exclude_processes", "company_devices", "max_hash_bytes", "partial_match_share", "other"])


@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_any_bytes_from_the_wire_are_a_policy_or_a_policy_error(document: bytes | str) -> None:
    try:
        parse_policy_document(document)
    except PolicyError:
        pass


@given(st.dictionaries(_keys, _toml_value, max_size=5))
def test_any_table_is_a_policy_or_a_policy_error_naming_a_key(table: dict[str, object]) -> None:
    try:
        policy = SensitiveFolderPolicy.from_mapping(table)
    except PolicyError as exc:
        assert exc.reason
        return
    assert SensitiveFolderPolicy.from_mapping(policy.to_mapping()) == policy
