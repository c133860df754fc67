"""Content-defined chunking and the copy matcher: invariants, the edit bound, prefixes, strangers."""

from __future__ import annotations

import bisect
import random
import shutil
import statistics
import sys
import tracemalloc
from typing import Iterator

import pytest
from hypothesis import example, HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.fingerprint import (
    CHUNK_MAX,
    CHUNK_MIN,
    REACH,
    Chunk,
    Chunker,
    FileFingerprint,
    Fingerprinter,
    compiled,
    fingerprint_bytes,
)
from agent.core.index import FingerprintIndex

SLOW = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def check_tiling(fp: FileFingerprint, size: int) -> None:
    offset = 0
    for chunk in fp.chunks:
        assert chunk.offset == offset
        assert 1 <= chunk.length <= CHUNK_MAX
        offset += chunk.length
    assert offset == size == fp.size


def test_empty_input_has_no_chunks() -> None:
    fp = fingerprint_bytes(b"")
    assert fp.chunks == ()
    assert fp.size == 0
    assert fp.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("size", [1, 100, CHUNK_MIN - 1, CHUNK_MIN])
def test_small_file_is_one_chunk(size: int) -> None:
    fp = fingerprint_bytes(random_bytes(size, size))
    assert len(fp.chunks) == 1
    assert fp.chunks[0] == Chunk(0, size, fp.chunks[0].fingerprint, False)


def test_chunk_sizes_on_random_data() -> None:
    data = random_bytes(7, 4 * 1024 * 1024)
    fp = fingerprint_bytes(data)
    check_tiling(fp, len(data))
    natural = [c.length for c in fp.chunks if c.natural]
    assert min(natural) >= CHUNK_MIN
    assert 6 * 1024 <= statistics.mean(c.length for c in fp.chunks) <= 11 * 1024
    assert sum(not c.natural for c in fp.chunks) <= 3


def test_low_entropy_data_is_cut_at_max_and_still_matches() -> None:
    zeros = bytes(1024 * 1024)
    fp = fingerprint_bytes(zeros)
    check_tiling(fp, len(zeros))
    assert all(c.length <= CHUNK_MAX for c in fp.chunks)
    index = FingerprintIndex()
    index.add("/s/zeros", fp)
    assert [m.kind for m in index.match(fingerprint_bytes(zeros))] == ["exact"]
    half = index.match(fingerprint_bytes(zeros[: len(zeros) // 2]), min_share=0.0)
    # Every chunk of zeros has the same content; a run of zeros "contains" the whole source.
    assert half[0].kind == "partial"


@SLOW
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 200_000),
    cuts=st.lists(st.integers(0, 200_000), max_size=6),
)
def test_chunks_do_not_depend_on_how_bytes_are_fed(seed: int, size: int, cuts: list[int]) -> None:
    data = random_bytes(seed, size)
    chunker = Chunker()
    fed: list[Chunk] = []
    previous = 0
    for cut in sorted(c for c in cuts if c <= size) + [size]:
        fed.extend(chunker.feed(data[previous:cut]))
        previous = cut
    fed.extend(chunker.finish())
    whole = fingerprint_bytes(data)
    assert tuple(fed) == whole.chunks
    check_tiling(whole, size)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here: the Python loop is used")
def test_the_extension_is_built_here() -> None:
    # CI and developers install with a compiler: the C loop must be what runs (the Python loop is
    # ~100 times slower and only a fallback).
    assert compiled()


@SLOW
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 300_000),
    zeros=st.integers(0, 200_000),
    cuts=st.lists(st.integers(0, 500_000), max_size=8),
)
def test_the_c_loop_cuts_exactly_where_the_python_rule_does(seed: int, size: int, zeros: int, cuts: list[int]) -> None:
    # random data, then a run without natural cuts (forced cuts), then random again
    data = random_bytes(seed, size) + bytes(zeros) + random_bytes(seed + 1, size // 3)
    fast, fed, previous = Chunker(), [], 0
    for cut in sorted(c for c in cuts if c <= len(data)) + [len(data)]:
        fed.extend(fast.feed(data[previous:cut]))
        previous = cut
    fed.extend(fast.finish())
    slow = Chunker(pure=True)
    assert fed == slow.feed(data) + slow.finish()


def test_fingerprinter_streams_to_the_same_result() -> None:
    data = random_bytes(3, 300_000)
    fingerprinter = Fingerprinter()
    for start in range(0, len(data), 4096):
        fingerprinter.feed(memoryview(data)[start : start + 4096])
    assert fingerprinter.finish() == fingerprint_bytes(data)


def test_exact_copy_is_exact() -> None:
    data = random_bytes(11, 100_000)
    index = FingerprintIndex()
    index.add("/s/a", fingerprint_bytes(data))
    index.add("/s/unrelated", fingerprint_bytes(random_bytes(12, 50_000)))
    matches = index.match(fingerprint_bytes(data))
    assert [(m.source_path, m.kind, m.share) for m in matches] == [("/s/a", "exact", 1.0)]


@pytest.mark.parametrize("size", [1, 100, 3000])
def test_small_files_match_exactly(size: int) -> None:
    data = random_bytes(size + 1, size)
    index = FingerprintIndex(min_share=1.0)
    index.add("/s/small", fingerprint_bytes(data))
    assert [m.kind for m in index.match(fingerprint_bytes(data))] == ["exact"]
    changed = bytes([data[0] ^ 1]) + data[1:]
    assert all(m.kind == "partial" for m in index.match(fingerprint_bytes(changed), min_share=0.0))


def test_empty_source_is_not_indexed() -> None:
    index = FingerprintIndex()
    index.add("/s/empty", fingerprint_bytes(b""))
    assert len(index) == 0
    assert index.match(fingerprint_bytes(b""), min_share=0.0) == []


def lost_interval_bound(source: FileFingerprint, positions: list[int]) -> float:
    """The share the module docstring proves a copy with these positions changed keeps."""
    starts = [c.offset for c in source.chunks]
    natural_ends = [c.offset + c.length for c in source.chunks if c.natural]
    intervals = []
    for p in positions:
        chunk_start = starts[bisect.bisect_right(starts, p) - 1]
        i = bisect.bisect_left(natural_ends, p + REACH)
        resync = natural_ends[i] if i < len(natural_ends) else source.size
        intervals.append((chunk_start, resync))
    lost, reach = 0, 0
    for a, b in sorted(intervals):
        a = max(a, reach)
        if b > a:
            lost += b - a
            reach = b
    return 1 - lost / source.size


@SLOW
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(64 * 1024, 512 * 1024),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                   min_size=1, max_size=4),
)
def test_copy_with_k_changed_bytes_keeps_the_proved_share(
    seed: int, size: int, edits: list[tuple[float, int]]
) -> None:
    data = random_bytes(seed, size)
    source = fingerprint_bytes(data)
    copy = bytearray(data)
    changes = {int(where * size): xor for where, xor in edits}
    for p, xor in changes.items():
        copy[p] ^= xor  # a non-zero xor: the byte really changes
    positions = sorted(changes)
    index = FingerprintIndex(min_share=0.0)
    index.add("/s/src", source)
    matches = index.match(fingerprint_bytes(bytes(copy)))
    share = matches[0].share if matches else 0.0
    proved = lost_interval_bound(source, positions)
    assert share >= proved - 1e-12
    if all(c.natural for c in source.chunks[:-1]):
        k = len(positions)
        assert share >= 1 - k * (2 * CHUNK_MAX + REACH) / size - 1e-12
    if matches:
        assert matches[0].kind == "partial"
        assert matches[0].share < 1.0


@SLOW
@example(seed=67973, size=65536)  # the first half holds no whole chunk of the source: no match is right
@given(seed=st.integers(0, 2**32), size=st.integers(64 * 1024, 512 * 1024))
def test_first_half_is_a_partial_match_of_about_half(seed: int, size: int) -> None:
    data = random_bytes(seed, size)
    index = FingerprintIndex(min_share=0.0)
    index.add("/s/src", fingerprint_bytes(data))
    n = size // 2
    matches = index.match(fingerprint_bytes(data[:n]))
    lower = (n - CHUNK_MAX) / size  # at most the chunk cut by the end of the prefix is lost
    assert all(m.share <= n / size for m in matches)
    if lower > 0:
        [match] = matches
        assert match.kind == "partial"
        assert lower <= match.share
        assert (n - CHUNK_MAX) / n <= match.dest_share <= 1.0


@SLOW
@given(seed=st.integers(0, 2**32), size=st.integers(1, 512 * 1024))
def test_unrelated_random_file_does_not_match(seed: int, size: int) -> None:
    index = FingerprintIndex(min_share=0.0)
    index.add("/s/src", fingerprint_bytes(random_bytes(seed, 256 * 1024)))
    assert index.match(fingerprint_bytes(random_bytes(seed + 1, size))) == []


def test_insertion_in_the_middle_still_matches_most() -> None:
    data = random_bytes(21, 512 * 1024)
    edited = data[:200_000] + b"inserted by an editor" * 5 + data[200_000:]
    index = FingerprintIndex()
    index.add("/s/src", fingerprint_bytes(data))
    [match] = index.match(fingerprint_bytes(edited))
    assert match.kind == "partial"
    assert match.share >= 1 - (2 * CHUNK_MAX + REACH) / len(data)


def test_threshold_is_the_policy_share_measured_both_ways() -> None:
    data = random_bytes(5, 400_000)
    index = FingerprintIndex(min_share=0.6)
    index.add("/s/src", fingerprint_bytes(data))
    # half the source, nothing else: under 0.6 of the source, but all of it comes from the source
    [half] = index.match(fingerprint_bytes(data[:200_000]))
    assert half.share < 0.6 <= half.dest_share
    # a quarter of the source inside three times as much of something else: under 0.6 both ways
    mixed = data[:100_000] + random_bytes(6, 300_000)
    assert index.match(fingerprint_bytes(mixed)) == []
    [low] = index.match(fingerprint_bytes(mixed), min_share=0.2)
    assert low.share < 0.6 and low.dest_share < 0.6


def test_concatenation_matches_both_sources() -> None:
    a, b = random_bytes(31, 200_000), random_bytes(32, 150_000)
    index = FingerprintIndex(min_share=0.5)
    index.add("/s/a", fingerprint_bytes(a))
    index.add("/s/b", fingerprint_bytes(b))
    matches = {m.source_path: m for m in index.match(fingerprint_bytes(a + b))}
    assert set(matches) == {"/s/a", "/s/b"}
    assert matches["/s/a"].share >= (len(a) - CHUNK_MAX) / len(a)
    assert all(m.kind == "partial" for m in matches.values())


def test_update_and_remove_forget_old_content() -> None:
    old, new = random_bytes(41, 100_000), random_bytes(42, 100_000)
    index = FingerprintIndex()
    index.add("/s/a", fingerprint_bytes(old))
    index.add("/s/b", fingerprint_bytes(old))
    assert {m.source_path for m in index.match(fingerprint_bytes(old))} == {"/s/a", "/s/b"}
    index.update("/s/a", fingerprint_bytes(new))
    assert [m.source_path for m in index.match(fingerprint_bytes(old))] == ["/s/b"]
    assert [m.source_path for m in index.match(fingerprint_bytes(new))] == ["/s/a"]
    assert index.remove("/s/b")
    assert not index.remove("/s/b")
    assert index.match(fingerprint_bytes(old), min_share=0.0) == []
    index.remove("/s/a")
    assert len(index) == 0 and index.chunk_count() == 0


def test_many_identical_sources_all_match_and_leave_one_by_one() -> None:
    data = random_bytes(52, 3000)  # e.g. 20,000 copies of one template in a sensitive folder
    index = FingerprintIndex()
    for i in range(20_000):
        index.add(f"/s/{i:05d}", fingerprint_bytes(data))
    for i in range(0, 20_000, 2):
        index.remove(f"/s/{i:05d}")
    matches = index.match(fingerprint_bytes(data))
    assert [m.source_path for m in matches] == [f"/s/{i:05d}" for i in range(1, 20_000, 2)]
    assert {m.kind for m in matches} == {"exact"}
    for i in range(1, 20_000, 2):
        index.remove(f"/s/{i:05d}")
    assert len(index) == 0 and index.chunk_count() == 0


def test_ignore_leaves_out_the_candidate_itself() -> None:
    data = random_bytes(51, 50_000)
    index = FingerprintIndex()
    index.add("/s/a", fingerprint_bytes(data))
    assert index.match(fingerprint_bytes(data), ignore=["/s/a"]) == []


def test_incomplete_fingerprint_never_matches_exactly() -> None:
    data = random_bytes(61, 100_000)
    fingerprinter = Fingerprinter()
    fingerprinter.feed(data)
    prefix_only = fingerprinter.finish(complete=False)
    index = FingerprintIndex()
    index.add("/s/a", fingerprint_bytes(data))
    [match] = index.match(prefix_only)
    assert match.kind == "partial" and match.share == 1.0


def test_index_holds_fingerprints_not_content() -> None:
    data = random_bytes(71, 1024 * 1024)
    fp = fingerprint_bytes(data)
    index = FingerprintIndex()
    index.add("/s/a", fp)
    assert index.chunk_count() == len({c.fingerprint for c in fp.chunks}) < len(data) // CHUNK_MIN


def office_files(n: int, seed: int = 8) -> Iterator[tuple[str, FileFingerprint, int]]:
    """Fingerprints (path, fingerprint, anchor) of ``n`` office-sized files, without their content."""
    rng = random.Random(seed)
    for i in range(n):
        size = rng.randint(4 * 1024, 64 * 1024)  # office-sized: about 1 to 8 chunks each
        lengths = [8192] * (size // 8192) + ([size % 8192] if size % 8192 else [])
        chunks, offset = [], 0
        for length in lengths:
            chunks.append(Chunk(offset, length, rng.getrandbits(64), True))
            offset += length
        path = f"/srv/finance/department-{i % 50:02d}/contract-{i:06d}.docx"
        yield path, FileFingerprint(rng.randbytes(32).hex(), size, tuple(chunks)), rng.getrandbits(64)


@pytest.mark.slow
def test_the_index_of_100000_office_files_fits_in_80_mb() -> None:
    files = list(office_files(100_000))
    tracemalloc.start()  # counts what indexing allocates and keeps, paths included
    try:
        index = FingerprintIndex()
        for path, fingerprint, anchor in files:
            index.add(path, fingerprint, anchor=anchor)
        used, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    used += sum(sys.getsizeof(path) for path, _, _ in files)  # made before tracing started
    assert len(index) == 100_000
    assert used < 80e6, f"{used / 1e6:.1f} MB"
    print(f"index of 100,000 files: {used / 1e6:.1f} MB")


def test_fingerprint_validates_its_chunks() -> None:
    with pytest.raises(ValueError):
        FileFingerprint("0" * 64, 10, ())
    with pytest.raises(ValueError):
        FileFingerprint("0" * 3, 0, ())
