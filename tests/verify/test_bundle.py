"""shoumi-verify over a bundle of a case with real signed evidence: it holds, and every change is named.

The case is built in-process through the real ingest path (tests/collector/evidence/world.py); the
same checks over a bundle from real processes are in tests/collector/evidence/test_export_processes.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from collector.evidence.bundle import head_json
from collector.transparency import load_tree_key
from shoumi_verify.check import Trust, verify_bundle
from shoumi_verify.formats import key_id, tree_head_bytes

from tests.collector.evidence.world import CaseWorld, build_case, export
from tests.verify.tamper import edit_json, failure, flip, reseal, zip_bytes

VERIFY = str(Path(sys.executable).parent / "shoumi-verify")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaseWorld]:
    w = build_case(tmp_path_factory.mktemp("evidence") / "collector")
    yield w
    w.store.close()


@pytest.fixture(scope="module")
def bundle(world: CaseWorld) -> dict[str, bytes]:
    return export(world, with_report=True).members  # report.pdf included: it is a member like the others


def test_the_bundle_verifies_and_says_what_it_checked(bundle: dict[str, bytes]) -> None:
    report = verify_bundle(bundle, lang="en")
    codes = [c for c, _ in report.passed]
    for needed in ("ok.manifest", "ok.members", "ok.certs", "ok.batches", "ok.chain", "ok.events", "ok.heads",
                   "ok.inclusion", "ok.consistency", "ok.audit", "ok.attachments"):
        assert needed in codes
    assert ("ok.events", {"events": 6}) in report.passed
    assert "ok.no_agreement" in codes  # no agreement part installed: said so, not failed


def test_the_console_script_exits_0_in_chinese_and_english(bundle: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    path.write_bytes(zip_bytes(bundle))
    zh = subprocess.run([VERIFY, str(path)], capture_output=True, text=True, timeout=60)
    assert zh.returncode == 0, zh.stdout + zh.stderr
    assert "结论：全部验证通过" in zh.stdout and "终端哈希链完整" in zh.stdout
    en = subprocess.run([VERIFY, str(path), "--lang", "en"], capture_output=True, text=True, timeout=60)
    assert en.returncode == 0 and "RESULT: everything holds" in en.stdout


def _expected(member: str) -> set[str]:
    if member == "manifest.sig":
        return {"manifest.signature"}
    if member in ("manifest.json", "keys/collector.json"):  # read before the member hashes are
        return {"manifest.signature", "manifest.invalid", "member.invalid", "manifest.key", "member.hash"}
    return {"member.hash"}


def test_flipping_one_byte_of_any_member_is_named(bundle: dict[str, bytes]) -> None:
    """Table-driven over every member of the bundle: each flipped byte fails, naming the member."""
    assert len(bundle) >= 18
    for member in sorted(bundle):
        for at in (0, len(bundle[member]) // 2, len(bundle[member]) - 1):
            changed = dict(bundle)
            changed[member] = flip(bundle[member], at)
            found = failure(changed)
            assert found is not None, f"{member} byte {at} changed and nothing was found"
            assert found.code in _expected(member), (member, at, found.code, found.detail)
            if found.code == "member.hash":
                assert found.detail["path"] == member


def test_the_console_script_names_a_changed_member_and_exits_1(bundle: dict[str, bytes], tmp_path: Path) -> None:
    changed = dict(bundle)
    changed["events.json"] = flip(bundle["events.json"])
    path = tmp_path / "bundle.zip"
    path.write_bytes(zip_bytes(changed))
    done = subprocess.run([VERIFY, str(path), "--lang", "en"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "[member.hash] 'events.json' was changed" in done.stdout and "RESULT: FAILED at member.hash" in done.stdout
    zh = subprocess.run([VERIFY, str(path)], capture_output=True, text=True, timeout=60)
    assert zh.returncode == 1 and "'events.json' 已被改动" in zh.stdout


def _events(doc: Any) -> Any:
    return doc


# What an operator holding the collector's key could do: change a member and sign a new manifest.
RESEALED: list[tuple[str, Any, str]] = [
    ("remove an event", lambda m: edit_json(m, "events.json", lambda d: d.pop(1) and None), "event.missing"),
    ("reorder two events", lambda m: edit_json(m, "events.json", lambda d: [d[1], d[0], *d[2:]]), "event.order"),
    ("repeat an event", lambda m: edit_json(m, "events.json", lambda d: [d[0], *d]), "event.order"),
    ("change an event's path", lambda m: edit_json(m, "events.json", lambda d: d[0].update(path="/tmp/x")),
     "event.field"),
    ("change an event's attributes", lambda m: edit_json(m, "events.json", lambda d: d[0].update(attributes='{"a": 1}')),
     "event.field"),
    ("an event no batch signed", lambda m: edit_json(m, "events.json", lambda d: d.append({**d[-1], "seq": 999})),
     "event.unsigned"),
    ("change a signed batch", lambda m: {**m, "batches/0000000002.canonical": flip(m["batches/0000000002.canonical"])},
     "batch.*"),
    ("change a batch signature", lambda m: {**m, "batches/0000000002.sig": flip(m["batches/0000000002.sig"])},
     "batch.signature"),
    ("drop a batch", lambda m: edit_json(m, "batches.json", lambda d: d.pop(0) and None), "event.unsigned"),
    ("another agent key", lambda m: edit_json(m, "keys/agents.json", lambda d: d["agt-alice"].update(
        public_key="11" * 32)), "cert.agent"),
    ("an inclusion proof changed", lambda m: edit_json(m, "tree/inclusion.json", lambda d: d[0]["proof"].__setitem__(
        0, "00" * 32)), "tree.inclusion"),
    ("a consistency proof dropped", lambda m: edit_json(m, "tree/consistency.json", lambda d: []), "tree.consistency"),
    ("a head's root changed", lambda m: edit_json(m, "tree/heads.json", lambda d: d["heads"][0].update(
        root_hash="00" * 32)), "tree.head_signature"),
    ("an audit row changed", lambda m: edit_json(m, "audit.json", lambda d: d[0].update(actor="mallory")), "audit.row"),
    ("a loss document swapped", lambda m: {**m, **{k: b"another document" for k in m if k.startswith("attachments/")}},
     "attachment.hash"),
    ("a loss document removed", lambda m: {k: v for k, v in m.items() if not k.startswith("attachments/")},
     "attachment.missing"),
]


@pytest.mark.parametrize("what,change,code", RESEALED, ids=[r[0] for r in RESEALED])
def test_a_change_resealed_with_the_collector_key_is_still_named(world: CaseWorld, bundle: dict[str, bytes],
                                                                  what: str, change: Any, code: str) -> None:
    key = load_tree_key(world.data_dir)
    found = failure(reseal(change(bundle), key))
    assert found is not None, what
    assert found.code == code or (code.endswith("*") and found.code.startswith(code[:-1])), (found.code, found.detail)
    assert failure(change(bundle)) is not None  # and without a new manifest, its hash says so first


def test_a_manifest_signed_by_another_key_is_refused_when_the_real_key_is_given(world: CaseWorld,
                                                                                bundle: dict[str, bytes]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate()
    forged = reseal(edit_json(bundle, "keys/collector.json", lambda d: d.update(
        public_key=other.public_key().public_bytes_raw().hex(),
        key_id=key_id(other.public_key().public_bytes_raw()).hex())), other)
    real = load_tree_key(world.data_dir).public_key().public_bytes_raw()
    found = failure(forged, Trust(collector_key=real))
    assert found is not None and found.code == "collector_key.mismatch"
    # its heads are the real collector's, so without the key they fail the bundle's own key
    assert (failure(forged) or pytest.fail("forged bundle passed")).code == "tree.head_signature"


def test_the_tree_head_swapped_for_another_collectors_is_named(world: CaseWorld, bundle: dict[str, bytes],
                                                               tmp_path: Path) -> None:
    other = build_case(tmp_path / "other")
    try:
        theirs = export(other).members
    finally:
        other.store.close()
    swapped = {**bundle, "tree/heads.json": theirs["tree/heads.json"]}
    assert (failure(swapped) or pytest.fail("passed")).code == "member.hash"
    found = failure(reseal(swapped, load_tree_key(world.data_dir)))
    assert found is not None and found.code == "tree.head_signature"


def test_a_head_kept_elsewhere_is_checked_against_the_bundle(world: CaseWorld, bundle: dict[str, bytes]) -> None:
    with world.store.read() as tx:
        heads = list(tx.list_tree_heads())
    anchor = json.loads(bundle["tree/heads.json"])["anchor"]
    kept = next(h for h in heads if h.tree_size == anchor)
    report = verify_bundle(bundle, Trust(tree_head=head_json(kept)), lang="en")
    assert ("ok.external_head", {"size": anchor}) in report.passed
    # a head of the same size with another root, signed with the same key: a fork the bundle hides
    key = load_tree_key(world.data_dir)
    root = b"\x07" * 32
    forked = {**head_json(kept), "root_hash": root.hex(),
              "signature": key.sign(tree_head_bytes(kept.tree_size, root, kept.timestamp_ns)).hex()}
    found = failure(bundle, Trust(tree_head=forked))
    assert found is not None and found.code == "tree.external" and "fork" in found.detail["reason"]
    unrelated = next(h for h in heads if h.tree_size not in (anchor, heads[-1].tree_size))
    found = failure(bundle, Trust(tree_head=head_json(unrelated)))
    assert found is not None and found.code == "tree.external" and "--prove-from" in found.detail["reason"]


def test_prove_from_relates_a_head_an_auditor_kept(world: CaseWorld) -> None:
    with world.store.read() as tx:
        first = tx.list_tree_heads()[0]
    made = export(world, prove_from=(first.tree_size,))
    report = verify_bundle(made.members, Trust(tree_head=head_json(first)), lang="en")
    assert ("ok.external_head", {"size": first.tree_size}) in report.passed


def test_the_export_is_audited_with_the_bundles_hash(world: CaseWorld) -> None:
    made = export(world)
    with world.store.read() as tx:
        rows = tx.list_audit(cursor=None, limit=5, filter=None).items
    mine = next(r for r in rows if r.action == "evidence.export")
    assert mine.target == str(world.case_id) and mine.actor == "cli:test"
    assert mine.details["sha256"] == made.sha256 and mine.details["size"] == len(made.zip)


def test_the_agreement_checker_is_used_when_there_and_its_absence_is_said(world: CaseWorld,
                                                                          bundle: dict[str, bytes]) -> None:
    key = load_tree_key(world.data_dir)
    with_agreement = reseal({**bundle, "agreement/record.json": b'{"type": "shoumi.agreement-record/1"}'}, key)
    # no checker installed: the members' hashes are checked and the report says the rest was not
    report = verify_bundle(with_agreement, lang="en", agreement=None)
    assert "ok.agreement_unchecked" in [c for c, _ in report.passed]
    # a checker that finds a problem: named, exit 1; one that finds none: its description is the report's line
    problems = (lambda m: ["signed.pdf's signature does not verify"], lambda m, lang: [])
    found = failure_with(with_agreement, problems)
    assert found == ("agreement.problem", "signed.pdf's signature does not verify")
    seen: dict[str, object] = {}
    fine = (lambda m: seen.setdefault("members", sorted(m)) and [], lambda m, lang: [f"NDA v3 ({lang})"])
    report = verify_bundle(with_agreement, lang="en", agreement=fine)
    assert ("ok.agreement", {"summary": "NDA v3 (en)"}) in report.passed
    assert seen["members"] == ["record.json"]  # names relative to agreement/
    # no agreement members: "no agreement on record", whatever checker there is
    assert "ok.no_agreement" in [c for c, _ in verify_bundle(bundle, agreement=fine).passed]


def failure_with(members: dict[str, bytes], checker: Any) -> tuple[str, str] | None:
    from shoumi_verify.check import Failed

    try:
        verify_bundle(members, lang="en", agreement=checker)
    except Failed as exc:
        return exc.code, exc.detail.get("problem", "")
    return None


def test_the_verifier_imports_nothing_of_the_collector(bundle: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    path.write_bytes(zip_bytes(bundle))
    code = ("import sys; from shoumi_verify.__main__ import main; import shoumi_verify.witness; rc = main([sys.argv[1]]);"
            " bad = sorted(m for m in sys.modules if m.split('.')[0] in ('collector', 'agent', 'payroll_bridge'));"
            " print('IMPORTED', bad); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "IMPORTED []" in done.stdout
