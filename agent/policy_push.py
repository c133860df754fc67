"""Pushed policies: what stands between a SignedPolicy on an Ack and the runtime that applies it.

The collector attaches the policy assigned to this agent to its Acks (possibly to every Ack until
the agent reports it). ``check_pushed`` decides, without I/O, whether it may replace the policy in
force: the signature must verify under the key pinned at enrollment (``agent.identity``), a policy
of the same name may not go back to a lower version, and the document must parse with the one
``[policy]`` parser (``agent.policy.parse_policy_document``). ``PushedPolicyStore`` keeps the last
one applied in the state directory (atomically, with its signature) and re-verifies it at start,
where it is preferred over a local agent.toml. ``PolicyInForce`` is what the agent reports in
``policy.applied``, its heartbeats and ``agent.start``: name, version, sha256 and source.

A local policy (agent.toml / --watch) is reported as name ``local``, version 0, and the SHA-256 of
its canonical JSON (``to_mapping()``, keys sorted), so an unchanged file gives the same hash.

Errors::

    PolicyRefused       the pushed policy cannot be applied; ``reason`` says why (reported as is)
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shoumi.signed_policy import PolicySignatureError, document_sha256, verify_policy
from shoumi.v1 import events_pb2

from agent.identity import PUSHED_POLICY_FILE, write_private
from agent.policy import PolicyError, SensitiveFolderPolicy, parse_policy_document

__all__ = ["LOCAL_NAME", "PolicyInForce", "PolicyRefused", "PushedPolicyStore", "check_pushed", "local_policy",
           "pushed_identity"]

log = logging.getLogger("shoumi.agent.policy_push")
LOCAL_NAME = "local"
NO_KEY = ("no collector policy key is pinned (this agent was enrolled without one): pushed policies are "
          "refused; re-enroll it to accept them")


class PolicyRefused(Exception):
    """A pushed policy that cannot be applied; the previous one stays in force."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PolicyInForce:
    """The policy the agent applies, and how it reports it."""

    policy: SensitiveFolderPolicy
    name: str
    version: int
    sha256: str
    source: Literal["collector", "local"]

    @property
    def identity(self) -> tuple[str, int, str]:
        """(name, version, sha256): what makes two pushes the same."""
        return (self.name, self.version, self.sha256)

    def report(self) -> dict[str, Any]:
        """The attributes of policy.applied (besides the policy's own mapping)."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "source": self.source}

    def heartbeat(self) -> dict[str, Any]:
        """The attributes heartbeats and agent.start carry about it."""
        return {"policy_name": self.name, "policy_version": self.version, "policy_sha256": self.sha256,
                "policy_source": self.source}


def local_policy(policy: SensitiveFolderPolicy) -> PolicyInForce:
    """The in-force value of a policy read from agent.toml or --watch."""
    canonical = json.dumps(policy.to_mapping(), sort_keys=True, separators=(",", ":")).encode()
    return PolicyInForce(policy, LOCAL_NAME, 0, hashlib.sha256(canonical).hexdigest(), "local")


def pushed_identity(pushed: events_pb2.SignedPolicy) -> tuple[str, int, str]:
    """(name, version, sha256 of the document) of a pushed policy."""
    return (pushed.name, int(pushed.version), document_sha256(bytes(pushed.document)))


def check_pushed(pushed: events_pb2.SignedPolicy, *, public_key: bytes | None,
                 in_force: PolicyInForce) -> PolicyInForce:
    """Returns the policy a push would put in force, or raises PolicyRefused with the reason."""
    if public_key is None:
        raise PolicyRefused(NO_KEY)
    try:
        verify_policy(pushed, public_key)
    except PolicySignatureError as exc:
        raise PolicyRefused(str(exc)) from exc
    name, version, sha = pushed_identity(pushed)
    if not name:
        raise PolicyRefused("the policy has no name")
    if in_force.source == "collector" and name == in_force.name:
        if version < in_force.version:
            raise PolicyRefused(f"version {version} is older than the applied version {in_force.version}")
        if version == in_force.version and sha != in_force.sha256:
            raise PolicyRefused(f"version {version} is already applied with another document")
    try:
        policy = parse_policy_document(bytes(pushed.document))
    except PolicyError as exc:
        raise PolicyRefused(str(exc)) from exc
    return PolicyInForce(policy, name, version, sha, "collector")


class PushedPolicyStore:
    """The last good pushed policy in the state directory, as JSON with its signature (0600)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / PUSHED_POLICY_FILE

    def save(self, pushed: events_pb2.SignedPolicy) -> None:
        """Stores it atomically (tmp, fsync, rename, directory fsync)."""
        data = {
            "name": pushed.name, "version": int(pushed.version), "issued_unix_ns": int(pushed.issued_unix_ns),
            "document": bytes(pushed.document).decode("utf-8"), "signature": bytes(pushed.signature).hex(),
        }
        write_private(self.path, json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"))

    def load(self) -> events_pb2.SignedPolicy | None:
        """The stored policy (not yet verified), None if there is none; PolicyRefused if unreadable."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return events_pb2.SignedPolicy(
                name=str(raw["name"]), version=int(raw["version"]), issued_unix_ns=int(raw["issued_unix_ns"]),
                document=str(raw["document"]).encode("utf-8"), signature=bytes.fromhex(str(raw["signature"])),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PolicyRefused(f"the stored policy {self.path} is unreadable: {exc}") from exc

    def load_in_force(self, public_key: bytes | None) -> tuple[PolicyInForce | None, str | None, tuple[str, int, str]]:
        """The stored policy re-verified: (in force or None, why it was refused or None, its identity)."""
        try:
            pushed = self.load()
        except PolicyRefused as exc:
            return None, exc.reason, ("", 0, "")
        if pushed is None:
            return None, None, ("", 0, "")
        ident = pushed_identity(pushed)
        empty = local_policy(SensitiveFolderPolicy())
        try:
            return check_pushed(pushed, public_key=public_key, in_force=empty), None, ident
        except PolicyRefused as exc:
            log.warning("the stored pushed policy %s v%d is not used: %s", ident[0], ident[1], exc.reason)
            return None, exc.reason, ident
