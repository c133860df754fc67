"""Domain events of the agent: immutable values that validate when built.

Sources (watchdog, fanotify, mount polling) produce these; the spool stores them; only
``agent.wire`` turns them into protobuf. Nothing here does I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from shoumi.kinds import EVENT_KINDS

__all__ = ["EVENT_KINDS", "FileEvent", "escape_path"]



def escape_path(raw: str | bytes) -> str:
    """Returns a path as valid UTF-8 text; bytes that are not UTF-8 become \\xNN escapes."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="backslashreplace")
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
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")
        if self.time_unix_ns <= 0:
            raise ValueError("time_unix_ns must be positive")
        if self.sha256 and (len(self.sha256) != 64 or not _is_lower_hex(self.sha256)):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        object.__setattr__(self, "path", escape_path(self.path))
        object.__setattr__(self, "dest_path", escape_path(self.dest_path))
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))


def _is_lower_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
