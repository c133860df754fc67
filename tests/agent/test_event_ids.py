"""Event ids: version 7 UUIDs (RFC 9562) that sort in the order they were made, so the collector's
index of event ids grows at its end (bench/ingest.py measures what random ids cost it)."""

from __future__ import annotations

import time
import uuid

from hypothesis import given, strategies as st

from agent.core.events import FileEvent, new_event_id, uuid7_text

_NS = st.integers(min_value=0, max_value=(2**48 - 1) * 1_000_000)
_RAND = st.integers(min_value=0, max_value=2**62 - 1)


@given(_NS, _RAND)
def test_an_id_is_a_version_7_uuid_carrying_its_milliseconds(unix_ns: int, rand62: int) -> None:
    text = uuid7_text(unix_ns, rand62)
    u = uuid.UUID(text)
    assert str(u) == text  # canonical lower-case text, as uuid prints it
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert u.int >> 80 == unix_ns // 1_000_000
    assert u.int & (2**62 - 1) == rand62  # all 62 random bits are kept


@given(_NS, st.integers(min_value=245, max_value=10**12), _RAND, _RAND)
def test_a_later_id_sorts_after_an_earlier_one_whatever_the_random_bits(unix_ns: int, later_by: int, r1: int,
                                                                          r2: int) -> None:
    later = min(unix_ns + later_by, (2**48 - 1) * 1_000_000)
    if later - unix_ns < 245:
        return
    assert uuid7_text(unix_ns, r1) < uuid7_text(later, r2)


def test_ids_made_now_carry_the_clock_and_are_distinct() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_event_id() for _ in range(20_000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    assert before <= min(stamps) and max(stamps) <= after
    assert all(uuid.UUID(i).version == 7 for i in ids)


def test_events_get_such_ids_by_default() -> None:
    e = FileEvent(kind="file.read", time_unix_ns=time.time_ns(), path="/srv/a.txt")
    assert uuid.UUID(e.id).version == 7
