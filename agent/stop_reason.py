"""Why the agent is stopping, as told by whoever stops it: the package's maintainer scripts write a
``stop-reason`` file in the state directory (root only, 0700) before they stop the service, and the
signed ``agent.stop`` carries that reason ("package removal", "package upgrade") instead of "signal".

The file is read once and removed, so a later plain stop says "signal" again. Its content is
untrusted text: only the first line, printable characters, at most ``MAX_LENGTH`` of them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STOP_REASON_FILE", "MAX_LENGTH", "take_stop_reason"]

STOP_REASON_FILE = "stop-reason"
MAX_LENGTH = 120


def take_stop_reason(state_dir: Path, default: str = "signal") -> str:
    """Returns the reason left in the state directory (and removes it), or ``default``."""
    path = state_dir / STOP_REASON_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read(4 * MAX_LENGTH)
        path.unlink()
    except FileNotFoundError:
        return default
    except OSError:
        return default
    text = raw.decode("utf-8", "replace").splitlines()[0] if raw.strip() else ""
    cleaned = "".join(ch for ch in text if ch.isprintable()).strip()[:MAX_LENGTH]
    return cleaned or default
