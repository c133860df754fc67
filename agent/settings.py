"""The agent's settings: one typed object built in __main__ and passed down.

Fields come from the command line or the environment (prefix SHOUMI_AGENT_, e.g.
``SHOUMI_AGENT_BATCH_LINGER_S=0.1``; ``SHOUMI_AGENT_WATCH`` is a JSON list or one path); what the
command line gives wins. Checked here without pydantic: the agent's resident memory is part of
what employees feel, and pydantic with pydantic-settings costs it ~10 MB for fifteen fields.

Exceptions::

    ValueError
    └── SettingsError     a setting is unknown, of the wrong type or out of its range
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

__all__ = ["AgentSettings", "SettingsError"]

ENV_PREFIX = "SHOUMI_AGENT_"
Capture = Literal["auto", "fanotify", "inotify"]


class SettingsError(ValueError):
    """A setting is unknown, of the wrong type or out of its range."""


@dataclass(frozen=True)
class AgentSettings:
    """Everything the agent process needs to know besides its policy."""

    state_dir: Path = Path("/var/lib/shoumi-agent")
    watch: list[Path] = field(default_factory=list)  # sensitive folders to watch (adds to the policy)
    config: Path | None = None  # agent.toml holding the [policy] table
    capture: Capture = "auto"  # fanotify (root) or inotify; auto picks fanotify when usable
    mount_poll_s: float = 2.0  # how often removable mounts are looked for
    collector: str | None = None  # HOST:PORT; default: the one enrolled with
    attributed_user: str | None = None  # user for events without a pid (inotify)
    batch_max_events: int = 500
    in_flight_batches: int = 16
    batch_linger_s: float = 0.15  # how long a part-full batch waits for more events
    heartbeat_seconds: float = 30.0
    queue_capacity: int = 2_000  # events waiting for the spool; a full queue waits (RSS: ~0.5 KB each)
    max_hash_bytes: int = 256 * 1024 * 1024
    spool_cap_bytes: int = 1 << 30  # refuse (and count) new events beyond this
    nice: int = 10  # the agent's Python threads yield the CPU to the user's work (held execs: nice 0)

    def __post_init__(self) -> None:
        for name, (low, low_open, high) in _RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SettingsError(f"{name}: a number is needed, got {value!r}")
            if (value <= low) if low_open else (value < low):
                raise SettingsError(f"{name}: must be {'>' if low_open else '>='} {low}, got {value}")
            if high is not None and value > high:
                raise SettingsError(f"{name}: must be <= {high}, got {value}")
        if self.capture not in ("auto", "fanotify", "inotify"):
            raise SettingsError(f"capture: one of auto, fanotify, inotify, got {self.capture!r}")

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **given: Any) -> "AgentSettings":
        """The settings from ``given`` (the command line), then the environment, then defaults."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise SettingsError(f"unknown setting {unknown[0]!r}")
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in names:
            if name in given:
                values[name] = _convert(name, given[name], from_text=False)
            elif (text := env.get(ENV_PREFIX + name.upper())) is not None:
                values[name] = _convert(name, text, from_text=True)
        return cls(**values)


# name -> (lower bound, whether the bound itself is excluded, upper bound or None)
_RANGES: dict[str, tuple[float, bool, float | None]] = {
    "mount_poll_s": (0, True, None),
    "batch_max_events": (1, False, 1000),
    "in_flight_batches": (1, False, 1000),
    "batch_linger_s": (0, False, 0.5),
    "heartbeat_seconds": (0, True, None),
    "queue_capacity": (100, False, None),
    "max_hash_bytes": (0, False, None),
    "spool_cap_bytes": (64 * 1024, False, None),
    "nice": (0, False, 19),
}
_INTS = {"batch_max_events", "in_flight_batches", "queue_capacity", "max_hash_bytes", "spool_cap_bytes", "nice"}
_FLOATS = {"mount_poll_s", "batch_linger_s", "heartbeat_seconds"}


def _paths(value: Any, from_text: bool) -> list[Path]:
    if from_text:
        text = str(value).strip()
        value = json.loads(text) if text.startswith("[") else [text]
    if not isinstance(value, (list, tuple)):
        raise SettingsError(f"watch: a list of paths is needed, got {value!r}")
    return [Path(p) for p in value]


def _convert(name: str, value: Any, *, from_text: bool) -> Any:
    try:
        if name == "watch":
            return _paths(value, from_text)
        if name in ("state_dir", "config"):
            return None if value is None else Path(value)
        if name in _INTS:
            if isinstance(value, float) and not value.is_integer():
                raise SettingsError(f"{name}: an integer is needed, got {value!r}")
            return int(value)
        if name in _FLOATS:
            return float(value)
        return None if value is None else str(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(f"{name}: cannot read {value!r}: {exc}") from None

