"""The agent's identity on disk: its Ed25519 key (0600), its enrolled state (agent.json) and the
collector's policy key pinned at enrollment (policy_key.pub: pushed policies must verify under it).

Errors::

    IdentityError (not enrolled, unreadable or corrupt state)
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["IdentityError", "AgentState", "load_or_create_key", "load_policy_key", "pin_policy_key",
           "public_key_bytes", "save_state", "load_state", "open_epoch", "write_private"]

KEY_FILE = "agent.key"
STATE_FILE = "agent.json"
POLICY_KEY_FILE = "policy_key.pub"
PUSHED_POLICY_FILE = "policy.pushed.json"  # the last good pushed policy (agent.policy_push)


class IdentityError(Exception):
    """The agent's state directory does not hold a usable identity."""


@dataclass(frozen=True)
class AgentState:
    """What enrollment gave the agent."""

    agent_id: str
    collector: str
    hostname: str
    tls: bool = True


def write_private(path: Path, data: bytes) -> None:
    """Writes a file readable by its owner only, atomically and durably (file and directory fsynced)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create_key(state_dir: Path) -> Ed25519PrivateKey:
    """Loads the agent's signing key, creating it (mode 0600) on first use."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / KEY_FILE
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"{path} is not a usable private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path} is not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(path, pem)
    return key


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """Returns the raw 32-byte public key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def open_epoch(state_dir: Path, *, spool_exists: bool) -> tuple[int, bool]:
    """Returns the spool epoch to use and whether it is a new one.

    The epoch changes only when the spool is created anew (first run, or a spool that was lost or
    reset); the counter lives outside the spool so that a reset cannot reuse an epoch.
    """
    path = state_dir / "epoch"
    try:
        current = int(path.read_text().strip())
    except FileNotFoundError:
        current = 0
    except ValueError as exc:
        raise IdentityError(f"{path} is corrupt") from exc
    if spool_exists and current > 0:
        return current, False
    write_private(path, str(current + 1).encode())
    return current + 1, True


def save_state(state_dir: Path, state: AgentState) -> None:
    """Stores the enrolled state atomically."""
    data = json.dumps(
        {"agent_id": state.agent_id, "collector": state.collector, "hostname": state.hostname, "tls": state.tls},
        indent=2,
    ).encode()
    write_private(state_dir / STATE_FILE, data)


def load_state(state_dir: Path) -> AgentState:
    """Loads the enrolled state; raises IdentityError if the agent is not enrolled."""
    path = state_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
        return AgentState(str(raw["agent_id"]), str(raw["collector"]), str(raw.get("hostname", socket.gethostname())),
                          bool(raw.get("tls", False)))
    except FileNotFoundError as exc:
        raise IdentityError(f"not enrolled: {path} is missing; run 'shoumi-agent enroll' first") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise IdentityError(f"{path} is corrupt: {exc}") from exc


def pin_policy_key(state_dir: Path, public_key: bytes) -> None:
    """Pins the collector's raw Ed25519 policy key (hex, 0600); an empty key unpins.

    Either way the policy pushed under an earlier enrollment is dropped: it came from another key.
    """
    if public_key and len(public_key) != 32:
        raise IdentityError(f"the collector's policy key has {len(public_key)} bytes, not 32")
    (state_dir / PUSHED_POLICY_FILE).unlink(missing_ok=True)
    if public_key:
        write_private(state_dir / POLICY_KEY_FILE, public_key.hex().encode() + b"\n")
    else:
        (state_dir / POLICY_KEY_FILE).unlink(missing_ok=True)


def load_policy_key(state_dir: Path) -> bytes | None:
    """The pinned policy key, or None when this agent was enrolled without one (local policy only)."""
    path = state_dir / POLICY_KEY_FILE
    try:
        key = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as exc:
        raise IdentityError(f"{path} is corrupt: {exc}") from exc
    if len(key) != 32:
        raise IdentityError(f"{path} is corrupt: {len(key)} bytes, not 32")
    return key
