"""Domain events of the agent: immutable values that validate when built.

Sources (watchdog, fanotify, mount polling) produce these; the spool stores them; only
``agent.wire`` turns them into protobuf. Nothing here does I/O.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from shoumi.kinds import EVENT_KINDS

__all__ = ["EVENT_KINDS", "FileEvent", "escape_path", "new_event_id", "uuid7_text"]



_HEX64 = re.compile("[0-9a-f]{64}")
def uuid7_text(unix_ns: int, rand62: int) -> str:
    """A version 7 UUID (RFC 9562 §5.7) as text: 48 bits of Unix milliseconds, the sub-millisecond
    fraction in the 12 bits of rand_a (§6.2, method 3: about 244 ns a step) and 62 bits of ``rand62``."""
    ms, sub = divmod(unix_ns, 1_000_000)
    value = ((ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7000 << 64 | (sub * 4096 // 1_000_000) << 64
             | 0x8000 << 48 | (rand62 & 0x3FFF_FFFF_FFFF_FFFF))
    h = "%032x" % value
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_event_id() -> str:
    """A time-ordered (version 7) UUID, as text. Ids made one after another sort one after another, so
    the collector's index of event ids grows at its end instead of at a random page for every event
    (with random version 4 ids that index cost more than all the others: bench/ingest.py --event-ids).
    The time it carries is the event's own, which the event states anyway. 62 random bits per 244 ns
    of one agent's clock keep ids unique; ``random`` is seeded from the OS at start and reseeded in a
    forked child (uuid.uuid4() costs a system call and ~4 times as much per event)."""
    return uuid7_text(time.time_ns(), random.getrandbits(62))


def escape_path(raw: str | bytes) -> str:
    """Returns a path as valid UTF-8 text; bytes that are not UTF-8 become \\xNN escapes."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="backslashreplace")
    if raw.isascii():
        return raw
    try:
        raw.encode("utf-8")
        return raw
    except UnicodeEncodeError:
        # os.fsdecode() keeps undecodable bytes as lone surrogates; turn them back into bytes.
        return raw.encode("utf-8", errors="surrogateescape").decode(
            "utf-8", errors="backslashreplace"
        )


@dataclass(frozen=True, slots=True)
class FileEvent:
    """One observation, before it has a sequence number (the spool assigns that)."""

    kind: str
    time_unix_ns: int
    path: str = ""
    dest_path: str = ""
    size: int = -1
    sha256: str = ""
    user: str = ""
    uid: int = -1
    pid: int = 0
    process: str = ""
    exe: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_event_id)

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")
        if self.time_unix_ns <= 0:
            raise ValueError("time_unix_ns must be positive")
        if self.sha256 and _HEX64.fullmatch(self.sha256) is None:
            raise ValueError("sha256 must be 64 lowercase hex digits")
        if type(self.path) is not str or not self.path.isascii():  # the common case costs nothing
            object.__setattr__(self, "path", escape_path(self.path))
        if type(self.dest_path) is not str or not self.dest_path.isascii():
            object.__setattr__(self, "dest_path", escape_path(self.dest_path))
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))
