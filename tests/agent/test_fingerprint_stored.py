"""The index on disk (StoredFingerprintIndex) answers as the dict index does, and the content
worker's store (ContentStore) keeps memory flat however many sensitive files it holds."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.content_store import ContentStore, StoredFingerprintIndex
from agent.core.fingerprint import Chunk, FileFingerprint, fingerprint_bytes
from agent.core.index import FingerprintIndex
from agent.snapshot import SnapshotEntry, diff_snapshots
from tests.agent.test_fingerprint import office_files

BLOCKS = [random.Random(i).randbytes(20_000) for i in range(6)]

# an operation: add path i with content made of some blocks (and an optional cut), remove path i,
# or match a content against the index
op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 5), st.lists(st.integers(0, 5), min_size=1, max_size=4),
              st.integers(0, 30_000), st.booleans()),
    st.tuples(st.just("remove"), st.integers(0, 5)),
    st.tuples(st.just("match"), st.lists(st.integers(0, 5), min_size=1, max_size=4), st.integers(0, 30_000),
              st.floats(0.0, 1.0)),
)


def content(blocks: list[int], cut: int) -> bytes:
    data = b"".join(BLOCKS[b] for b in blocks)
    return data[cut:] if cut < len(data) else data


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=25))
def test_the_stored_index_answers_as_the_dict_index(ops: list[tuple[Any, ...]]) -> None:
    memory, stored = FingerprintIndex(min_share=0.3), StoredFingerprintIndex(min_share=0.3)
    for o in ops:
        if o[0] == "add":
            _, i, blocks, cut, anchored = o
            fp = fingerprint_bytes(content(blocks, cut))
            anchor = fp.chunks[0].fingerprint if anchored and fp.chunks else None
            memory.add(f"/s/{i}", fp, anchor=anchor)
            stored.add(f"/s/{i}", fp, anchor=anchor)
        elif o[0] == "remove":
            assert memory.remove(f"/s/{o[1]}") == stored.remove(f"/s/{o[1]}")
        else:
            _, blocks, cut, share = o
            fp = fingerprint_bytes(content(blocks, cut))
            assert memory.match(fp, min_share=share) == stored.match(fp, min_share=share)
            if fp.chunks:
                assert memory.anchored(fp.chunks[0].fingerprint) == stored.anchored(fp.chunks[0].fingerprint)
        assert len(memory) == len(stored)
        assert memory.paths() == stored.paths()
        assert memory.chunk_count() == stored.chunk_count()
        for i in range(6):
            assert memory.source_size(f"/s/{i}") == stored.source_size(f"/s/{i}")
            assert (f"/s/{i}" in memory) == (f"/s/{i}" in stored)
    stored.commit()


def test_fingerprints_above_2_63_and_odd_paths_are_kept() -> None:
    index = StoredFingerprintIndex()
    high = FileFingerprint("ab" * 32, 100, (Chunk(0, 100, (1 << 64) - 3, True),))
    odd = "/s/\udcff-not-utf8"  # a name that is not UTF-8, as os.fsdecode gives it
    index.add(odd, high, anchor=(1 << 64) - 5)
    assert [m.source_path for m in index.match(high)] == [odd]
    assert index.anchored((1 << 64) - 5) == [odd]
    assert index.paths() == [odd]


def test_many_identical_sources_in_the_stored_index() -> None:
    fp = fingerprint_bytes(random.Random(52).randbytes(3000))
    index = StoredFingerprintIndex()
    for i in range(2_000):
        index.add(f"/s/{i:05d}", fp)
    for i in range(0, 2_000, 2):
        index.remove(f"/s/{i:05d}")
    assert [m.source_path for m in index.match(fp)] == [f"/s/{i:05d}" for i in range(1, 2_000, 2)]
    for i in range(1, 2_000, 2):
        index.remove(f"/s/{i:05d}")
    assert len(index) == 0 and index.chunk_count() == 0


entries = st.dictionaries(
    st.sampled_from([f"/s/{c}" for c in "abcdefgh"]),
    st.builds(SnapshotEntry, st.integers(0, 3), st.integers(0, 2), st.sampled_from(["", "h1", "h2"])),
)


@settings(deadline=None, max_examples=80)
@given(before=entries, after=entries)
def test_the_stores_scan_diff_is_diff_snapshots(before: dict[str, SnapshotEntry],
                                                 after: dict[str, SnapshotEntry]) -> None:
    store = ContentStore()
    store.begin_scan(before.items())
    for path, entry in after.items():
        store.found(path, entry)
    assert all(store.before(p) == e for p, e in before.items())
    assert store.end_scan() == len(after)
    assert list(store.changes()) == diff_snapshots(before, after)
    reported = {c.path for c in diff_snapshots(before, after)}
    expected = sorted((p, e) for p, e in after.items() if p not in reported and before.get(p) != e)
    assert list(store.quiet(first_run=False, catch_up=True)) == expected
    assert list(store.quiet(first_run=True, catch_up=False)) == sorted(after.items())
    assert {p: store.entry(p) for p in after} == after


def test_inodes_follow_the_latest_path_and_depart_once(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content.db")
    key = 7 << 64 | (1 << 63) + 5  # a device and an inode above 2**63
    store.note_inode("/s/a", key)
    assert store.path_of_inode(key) == "/s/a" and store.inode_of("/s/a") == key
    store.note_inode("/s/b", key)  # a hard link, or a rename seen as a new file: the latest wins
    assert store.path_of_inode(key) == "/s/b"
    assert store.forget_inode("/s/a") is None  # no longer that inode's path
    assert store.forget_inode("/s/b") == key
    assert store.path_of_inode(key) is None
    store.close()
    assert ContentStore(tmp_path / "content.db").entry_count() == 0  # a cache: emptied at start


def test_the_scans_findings_are_popped_once() -> None:
    store = ContentStore()
    store.begin_scan()
    store.note_inode("/s/a", 42)
    store.found("/s/a", SnapshotEntry(1, 1, "h"))
    store.end_scan()
    assert store.scan_seen_active
    assert store.pop_scan_seen("/s/a") == 42
    assert store.pop_scan_seen("/s/a") is None
    store.clear_scan_seen()
    assert not store.scan_seen_active


@pytest.mark.slow
def test_100000_office_files_cost_the_process_almost_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content.db")
    tracemalloc.start()
    try:
        store.begin_scan()
        for i, (path, fp, anchor) in enumerate(office_files(100_000)):
            store.index.add(path, fp, anchor=anchor)
            size = fp.size
            entry = SnapshotEntry(size, i, fp.sha256)
            store.set_entry(path, entry)
            store.note_inode(path, 1 << 64 | i)
            store.found(path, entry)
            store.maybe_commit(idle=False)
        store.end_scan()
        store.finish_scan()
        used, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(store.index) == 100_000 and store.entry_count() == 100_000
    # SQLite's page cache is not traced by tracemalloc; it is bounded by cache_kib (2 MB)
    assert used < 2e6 and peak < 8e6, (used, peak)
    print(f"100,000 files: {used / 1e6:.2f} MB kept, {peak / 1e6:.2f} MB peak in Python; "
          f"{store.size_on_disk() / 1e6:.1f} MB on disk")
