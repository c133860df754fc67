"""RFC 3339 in and out of the API, at nanosecond precision."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["format_ns", "parse_rfc3339_ns"]


def format_ns(ns: int) -> str:
    """Formats nanoseconds since the epoch as RFC 3339 UTC, e.g. 2026-11-25T14:00:00.000000123Z."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def parse_rfc3339_ns(text: str) -> int:
    """Parses an RFC 3339 time with a zone into nanoseconds; raises ValueError with a reason."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone; add Z or an offset such as +08:00")
    whole = int(parsed.replace(microsecond=0).timestamp())
    ns = whole * 1_000_000_000 + parsed.microsecond * 1000
    return max(-(2**63), min(ns, 2**63 - 1))  # stored times are signed 64-bit nanoseconds
