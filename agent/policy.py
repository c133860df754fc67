"""The agent's sensitive-folder policy: a value object read from the ``[policy]`` TOML table.

It says which folders hold sensitive files (globs such as ``/home/*/Contracts``), where copies
are looked for, which mounts count as removable media, and which paths and processes are ignored.
Being a frozen value with ``from_mapping``/``to_mapping``, the same policy can later be pushed by
the collector over the wire and compared for equality.

This module must never watch, hash or open the files the policy names; the only I/O is reading
the policy file itself (``load_policy``) and listing directories in ``expand_sensitive_folders``.

Exceptions::

    ValueError
    └── PolicyError          any invalid policy: unknown key, wrong type, bad glob, bad share;
                             ``key`` names the offending entry so the operator can fix the file.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

__all__ = [
    "DEFAULT_MAX_HASH_BYTES",
    "DEFAULT_PARTIAL_MATCH_SHARE",
    "PolicyError",
    "SensitiveFolderPolicy",
    "load_policy",
]

DEFAULT_MAX_HASH_BYTES = 256 * 1024 * 1024
DEFAULT_PARTIAL_MATCH_SHARE = 0.5

_LIST_KEYS = (
    "sensitive_folders",
    "destinations",
    "removable_mounts",
    "exclude_paths",
    "exclude_processes",
)
_KNOWN_KEYS = frozenset(_LIST_KEYS + ("max_hash_bytes", "partial_match_share"))

PathLike = str | bytes | os.PathLike[str] | os.PathLike[bytes]


class PolicyError(ValueError):
    """The policy is invalid; ``key`` names the offending entry (``""`` for the whole table)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"policy: {key}: {reason}" if key else f"policy: {reason}")
        self.key = key
        self.reason = reason


def _check_glob(key: str, pattern: str) -> None:
    """Refuses patterns fnmatch would silently misread: empty, NUL, unbalanced brackets."""
    if not pattern:
        raise PolicyError(key, "empty pattern")
    if "\x00" in pattern:
        raise PolicyError(key, f"NUL byte in pattern {pattern!r}")
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "[":
            # fnmatch treats an unclosed "[" as a literal character; an operator who wrote one
            # almost certainly meant a class, so say so instead of matching nothing.
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                raise PolicyError(key, f"unclosed '[' in pattern {pattern!r}")
            if j == i + 1:
                raise PolicyError(key, f"empty character class in pattern {pattern!r}")
            i = j + 1
            continue
        if c == "]":
            raise PolicyError(key, f"unmatched ']' in pattern {pattern!r}")
        i += 1


def _absolute(key: str, text: str) -> str:
    if not text.startswith("/"):
        raise PolicyError(key, f"{text!r} is not an absolute path")
    normal = os.path.normpath(text)
    # POSIX keeps a leading "//"; one slash is what every other part of the agent compares against.
    return "/" + normal.lstrip("/")


def _text_path(path: PathLike) -> str:
    raw = os.fspath(path)
    text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    return os.path.normpath(text)


def _parts(path: str) -> tuple[str, ...]:
    return PurePosixPath(path).parts


@dataclass(frozen=True)
class SensitiveFolderPolicy:
    """Which folders are sensitive, where copies are looked for, and what is ignored."""

    sensitive_folders: tuple[str, ...] = ()
    destinations: tuple[str, ...] = ()
    removable_mounts: tuple[str, ...] = ()
    exclude_paths: tuple[str, ...] = ()
    exclude_processes: tuple[str, ...] = ()
    max_hash_bytes: int = DEFAULT_MAX_HASH_BYTES
    partial_match_share: float = DEFAULT_PARTIAL_MATCH_SHARE

    def __post_init__(self) -> None:
        for key in _LIST_KEYS:
            value = getattr(self, key)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise PolicyError(key, "must be a list of strings")
            if not all(isinstance(item, str) for item in value):
                raise PolicyError(key, "must be a list of strings")
            object.__setattr__(self, key, tuple(value))
        for pattern in self.sensitive_folders:
            _check_glob("sensitive_folders", pattern)
        object.__setattr__(
            self,
            "sensitive_folders",
            tuple(_absolute("sensitive_folders", p) for p in self.sensitive_folders),
        )
        for key in ("destinations", "removable_mounts"):
            for path in getattr(self, key):
                if not path or "\x00" in path:
                    raise PolicyError(key, f"invalid path {path!r}")
            object.__setattr__(self, key, tuple(_absolute(key, p) for p in getattr(self, key)))
        for pattern in self.exclude_paths:
            _check_glob("exclude_paths", pattern)
        for name in self.exclude_processes:
            if not name or "/" in name or "\x00" in name:
                raise PolicyError("exclude_processes", f"invalid process name {name!r}")
        if isinstance(self.max_hash_bytes, bool) or not isinstance(self.max_hash_bytes, int):
            raise PolicyError("max_hash_bytes", "must be an integer")
        if self.max_hash_bytes < 0:
            raise PolicyError("max_hash_bytes", "must not be negative")
        share = self.partial_match_share
        if isinstance(share, bool) or not isinstance(share, (int, float)):
            raise PolicyError("partial_match_share", "must be a number")
        if not 0.0 <= float(share) <= 1.0:
            raise PolicyError("partial_match_share", f"{share} is outside 0..1")
        object.__setattr__(self, "partial_match_share", float(share))

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> SensitiveFolderPolicy:
        """Builds a policy from the ``[policy]`` table (or the same shape received on the wire)."""
        if not isinstance(table, Mapping):
            raise PolicyError("", "the [policy] table must be a table")
        unknown = sorted(set(table) - _KNOWN_KEYS)
        if unknown:
            raise PolicyError(unknown[0], f"unknown key (known: {', '.join(sorted(_KNOWN_KEYS))})")
        values: dict[str, Any] = {}
        for key in _LIST_KEYS:
            if key in table:
                value = table[key]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise PolicyError(key, "must be a list of strings")
                values[key] = tuple(value)
        for key in ("max_hash_bytes", "partial_match_share"):
            if key in table:
                values[key] = table[key]
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """Returns the policy as plain TOML/JSON-friendly values; ``from_mapping`` inverts it."""
        out: dict[str, Any] = {key: list(getattr(self, key)) for key in _LIST_KEYS}
        out["max_hash_bytes"] = self.max_hash_bytes
        out["partial_match_share"] = self.partial_match_share
        return out

    def is_sensitive(self, path: PathLike) -> bool:
        """Tells whether ``path`` is one of the sensitive folders or lies beneath one."""
        text = _text_path(path)
        # Asked for every event: the answer for the directory is cached, and a file can only add
        # a match of its own when some pattern is exactly as deep as the file's path.
        if _under_a_pattern(self.sensitive_folders, os.path.dirname(text)):
            return True
        depth = len(_parts(text))
        return any(len(_parts(p)) == depth for p in self.sensitive_folders) and _under_a_pattern(
            self.sensitive_folders, text)

    def is_excluded(self, path: PathLike) -> bool:
        """Tells whether ``path`` matches an exclude glob (a slash-free glob matches the name)."""
        text = _text_path(path)
        name = os.path.basename(text)
        for pattern in self.exclude_paths:
            if "/" in pattern:
                if fnmatch.fnmatchcase(text, pattern):
                    return True
            elif fnmatch.fnmatchcase(name, pattern):
                return True
        return False

    def is_excluded_process(self, process: str) -> bool:
        """Tells whether events caused by the named process (``/proc/PID/comm``) are ignored."""
        return process in self.exclude_processes

    def is_destination(self, path: PathLike) -> bool:
        """Tells whether ``path`` lies in a place where copies are looked for."""
        return _under_any(_text_path(path), self.destinations + self.removable_mounts)

    def expand_sensitive_folders(self) -> tuple[Path, ...]:
        """Resolves the sensitive-folder globs to the directories that exist now, sorted."""
        found: set[Path] = set()
        for pattern in self.sensitive_folders:
            for match in glob.glob(pattern):
                if os.path.isdir(match):
                    found.add(Path(match))
        return tuple(sorted(found))


@functools.lru_cache(maxsize=8192)
def _under_a_pattern(patterns: tuple[str, ...], path: str) -> bool:
    parts = _parts(path)
    for pattern in patterns:
        pattern_parts = _parts(pattern)
        if len(parts) >= len(pattern_parts) and all(
            fnmatch.fnmatchcase(part, pat) for part, pat in zip(parts, pattern_parts)
        ):
            return True
    return False


def _under_any(path: str, roots: Sequence[str]) -> bool:
    for root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return True
    return False


def load_policy(path: PathLike) -> SensitiveFolderPolicy:
    """Reads the ``[policy]`` table of an agent TOML file; other tables are left to their owners."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("", f"{os.fsdecode(os.fspath(path))} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise PolicyError("", f"cannot read {os.fsdecode(os.fspath(path))}: {exc}") from exc
    if "policy" not in document:
        raise PolicyError("", "no [policy] table")
    return SensitiveFolderPolicy.from_mapping(document["policy"])
