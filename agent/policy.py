"""The agent's sensitive-folder policy: a value object read from the ``[policy]`` TOML table.

It says which folders hold sensitive files (globs such as ``/home/*/Contracts``), where copies
are looked for, which mounts count as removable media, and which paths and processes are ignored.
It also lists the company-issued removable devices (``company_devices``: vendor id, product id and
serial), whose writes are still recorded but marked ``company_device``. Being a frozen value with
``from_mapping``/``to_mapping``, the same policy is pushed by the collector over the wire
(``parse_policy_document``: the one parser of a ``[policy]`` TOML document, used by the agent for
its agent.toml and for pushed policies, and by the collector to validate what IT edits) and
compared for equality.

Bounds (a policy beyond them is refused, naming the key): at most ``MAX_LIST_ENTRIES`` (1,000)
entries in each list, a document of at most ``MAX_DOCUMENT_BYTES`` (1 MiB); no sensitive-folder
glob may match ``/`` or a top-level system directory (``/usr``, ``/etc``, ``/home`` itself, ...:
``SYSTEM_DIRECTORIES``) or lie in /proc, /sys, /dev or /run, and no destination may be ``/``. A pushed policy must name at least one
sensitive folder (a local agent.toml may leave that to ``--watch``).

This module must never watch, hash or open the files the policy names; the only I/O is reading
the policy file itself (``load_policy``) and listing directories in ``expand_sensitive_folders``.
It is imported by the collector: it must stay free of side effects at import.

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
    "CompanyDevice",
    "DEFAULT_MAX_HASH_BYTES",
    "DEFAULT_PARTIAL_MATCH_SHARE",
    "MAX_DOCUMENT_BYTES",
    "MAX_LIST_ENTRIES",
    "PolicyError",
    "SYSTEM_DIRECTORIES",
    "SensitiveFolderPolicy",
    "load_policy",
    "parse_policy_document",
    "policy_table",
]

DEFAULT_MAX_HASH_BYTES = 256 * 1024 * 1024
DEFAULT_PARTIAL_MATCH_SHARE = 0.5
# Each list's bound: far above what a department's policy names, far below what would cost the
# agent its memory (each sensitive pattern is matched per event) or the operator a typo's damage.
MAX_LIST_ENTRIES = 1_000
MAX_DOCUMENT_BYTES = 1 << 20
# A sensitive-folder glob matching one of these would watch (and fingerprint) the system itself.
SYSTEM_DIRECTORIES = (
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
    "/run", "/sbin", "/snap", "/sys", "/tmp", "/usr", "/var",
)
_HEX4 = frozenset("0123456789abcdef")
_VIRTUAL_ROOTS = frozenset({"proc", "sys", "dev", "run"})

_LIST_KEYS = (
    "sensitive_folders",
    "destinations",
    "removable_mounts",
    "exclude_paths",
    "exclude_processes",
)
_KNOWN_KEYS = frozenset(_LIST_KEYS + ("company_devices", "max_hash_bytes", "partial_match_share"))
_DEVICE_KEYS = ("vendor_id", "product_id", "serial")

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


def _check_not_system(pattern: str) -> None:
    """Refuses a sensitive-folder glob that matches ``/`` or a top-level system directory, or lies
    in a filesystem of the kernel's (/proc, /sys, /dev, /run hold no files anyone copies)."""
    parts = _parts(pattern)
    if len(parts) > 1 and parts[1] in _VIRTUAL_ROOTS:
        raise PolicyError("sensitive_folders", f"pattern {pattern!r} is in /{parts[1]}, the kernel's, not files")
    for directory in SYSTEM_DIRECTORIES:
        target = _parts(directory)
        if len(parts) == len(target) and all(fnmatch.fnmatchcase(t, p) for t, p in zip(target, parts)):
            raise PolicyError("sensitive_folders", f"pattern {pattern!r} matches {directory}: far too broad "
                              "(name the folders that hold the sensitive files)")


def _hex4(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise PolicyError(key, "must be a string of 4 hex digits, e.g. \"0781\"")
    text = value.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if len(text) != 4 or not set(text) <= _HEX4:
        raise PolicyError(key, f"{value!r} is not 4 hex digits, e.g. \"0781\"")
    return text


@dataclass(frozen=True)
class CompanyDevice:
    """A company-issued removable device, known by its USB vendor id, product id and serial."""

    vendor_id: str
    product_id: str
    serial: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "vendor_id", _hex4("company_devices.vendor_id", self.vendor_id))
        object.__setattr__(self, "product_id", _hex4("company_devices.product_id", self.product_id))
        if not isinstance(self.serial, str) or not self.serial.strip() or "\x00" in self.serial:
            # a device without a serial cannot be told from any other of its model
            raise PolicyError("company_devices.serial", "must be the device's non-empty serial")
        object.__setattr__(self, "serial", self.serial.strip())

    @classmethod
    def from_mapping(cls, entry: object) -> CompanyDevice:
        """Builds one entry of ``company_devices`` (a table with vendor_id, product_id, serial)."""
        if not isinstance(entry, Mapping):
            raise PolicyError("company_devices", "each entry must be a table {vendor_id, product_id, serial}")
        unknown = sorted(set(entry) - set(_DEVICE_KEYS))
        if unknown:
            raise PolicyError(f"company_devices.{unknown[0]}", f"unknown key (known: {', '.join(_DEVICE_KEYS)})")
        for key in _DEVICE_KEYS:
            if key not in entry:
                raise PolicyError(f"company_devices.{key}", "missing")
        return cls(entry["vendor_id"], entry["product_id"], entry["serial"])

    def to_mapping(self) -> dict[str, str]:
        """The entry as a plain table."""
        return {"vendor_id": self.vendor_id, "product_id": self.product_id, "serial": self.serial}


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
    company_devices: tuple[CompanyDevice, ...] = ()

    def __post_init__(self) -> None:
        for key in _LIST_KEYS:
            value = getattr(self, key)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise PolicyError(key, "must be a list of strings")
            if len(value) > MAX_LIST_ENTRIES:
                raise PolicyError(key, f"{len(value)} entries; at most {MAX_LIST_ENTRIES} are allowed")
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
        for pattern in self.sensitive_folders:
            _check_not_system(pattern)
        for key in ("destinations", "removable_mounts"):
            for path in getattr(self, key):
                if not path or "\x00" in path:
                    raise PolicyError(key, f"invalid path {path!r}")
            object.__setattr__(self, key, tuple(_absolute(key, p) for p in getattr(self, key)))
            if "/" in getattr(self, key):
                raise PolicyError(key, "'/' is the whole filesystem: far too broad")
        devices = self.company_devices
        if isinstance(devices, (str, bytes)) or not isinstance(devices, Sequence):
            raise PolicyError("company_devices", "must be a list of tables {vendor_id, product_id, serial}")
        if len(devices) > MAX_LIST_ENTRIES:
            raise PolicyError("company_devices", f"{len(devices)} entries; at most {MAX_LIST_ENTRIES} are allowed")
        if not all(isinstance(d, CompanyDevice) for d in devices):
            raise PolicyError("company_devices", "must be a list of tables {vendor_id, product_id, serial}")
        object.__setattr__(self, "company_devices", tuple(devices))
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
                if not isinstance(value, list):
                    raise PolicyError(key, "must be a list of strings")
                if len(value) > MAX_LIST_ENTRIES:
                    raise PolicyError(key, f"{len(value)} entries; at most {MAX_LIST_ENTRIES} are allowed")
                if not all(isinstance(v, str) for v in value):
                    raise PolicyError(key, "must be a list of strings")
                values[key] = tuple(value)
        if "company_devices" in table:
            devices = table["company_devices"]
            if not isinstance(devices, list):
                raise PolicyError("company_devices", "must be a list of tables {vendor_id, product_id, serial}")
            if len(devices) > MAX_LIST_ENTRIES:
                raise PolicyError("company_devices",
                                  f"{len(devices)} entries; at most {MAX_LIST_ENTRIES} are allowed")
            values["company_devices"] = tuple(CompanyDevice.from_mapping(d) for d in devices)
        for key in ("max_hash_bytes", "partial_match_share"):
            if key in table:
                values[key] = table[key]
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """Returns the policy as plain TOML/JSON-friendly values; ``from_mapping`` inverts it."""
        out: dict[str, Any] = {key: list(getattr(self, key)) for key in _LIST_KEYS}
        out["max_hash_bytes"] = self.max_hash_bytes
        out["partial_match_share"] = self.partial_match_share
        out["company_devices"] = [d.to_mapping() for d in self.company_devices]
        return out

    def is_company_device(self, vendor_id: str, product_id: str, serial: str) -> bool:
        """Tells whether a USB device (ids as sysfs gives them) is one of the company's own."""
        if not (vendor_id and product_id and serial):
            return False
        key = (vendor_id.strip().lower(), product_id.strip().lower(), serial.strip())
        return any((d.vendor_id, d.product_id, d.serial) == key for d in self.company_devices)

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


def policy_table(document: str | bytes) -> dict[str, Any]:
    """The ``[policy]`` table of a document (or its keys at top level), read as TOML within the bounds;
    raises PolicyError. The first step of ``parse_policy_document``, shared with the collector's editor."""
    size = len(document) if isinstance(document, bytes) else len(document.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise PolicyError("", f"the document has {size} bytes; at most {MAX_DOCUMENT_BYTES} bytes are allowed")
    if isinstance(document, bytes):
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError("", f"the document is not UTF-8: {exc}") from exc
    try:
        parsed = tomllib.loads(document)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("", f"not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses per nested array or inline table
        raise PolicyError("", "not valid TOML: nested too deeply") from exc
    inner = parsed.get("policy")
    return inner if set(parsed) == {"policy"} and isinstance(inner, dict) else parsed


def parse_policy_document(document: str | bytes, *, require_folder: bool = True) -> SensitiveFolderPolicy:
    """Parses a policy document: TOML holding a ``[policy]`` table, or that table's keys at top level.

    The one parser of pushed policies (the agent) and of what IT edits (the collector); raises
    PolicyError naming the key. ``require_folder`` refuses a policy that names no sensitive folder.
    """
    policy = SensitiveFolderPolicy.from_mapping(policy_table(document))
    if require_folder and not policy.sensitive_folders:
        raise PolicyError("sensitive_folders", "the policy names no sensitive folder")
    return policy


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
