"""Delivery of assigned policies over the agents' streams, and the collector's policy signing key.

``PolicyDelivery`` keeps, in memory, the signed policy each agent is still to receive: the newest
version of the policy its labels pick, unless the agent already reported that version applied
(same hash) or refused it. The gRPC adapter asks ``pending(agent_id)`` for every Ack it sends: a
dict look-up, no query. The map is rebuilt from the store every few seconds (``refresh``, run by
the collector's periodic jobs) and at once after a change made through this collector: several
collectors may share one database, and the store is the truth. ``observe`` is called on the ingest
path with each stored batch's events; it touches the store only when the batch carries a policy
report or a heartbeat naming another policy than last recorded.

A policy still pending is sent again at most every ``resend_s`` seconds per agent, so an agent that
neither applies nor refuses it is not sent the document on every Ack.

The key (Ed25519, PKCS#8 PEM, mode 0600) lives in ``DATA_DIR/policy-signing.key``, made on first
start by an atomic create-if-absent; collectors sharing a database share their data directory's
keys as they share the CA. Agents pin its public key at enrollment (EnrollResponse.policy_public_key).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.signed_policy import document_sha256, sign_policy
from shoumi.v1 import events_pb2

from collector.events.models import StoredEvent
from collector.policy import service as policies
from collector.policy.models import AgentPolicyState, PolicyVersion, by_label_of
from collector.storage.base import Store, Transaction

__all__ = ["POLICY_KEY_FILE", "PolicyKeyError", "load_or_create_policy_key", "PolicyDelivery", "REFRESH_SECONDS"]

log = logging.getLogger("shoumi.collector.policy")

POLICY_KEY_FILE = "policy-signing.key"
REFRESH_SECONDS = 3.0


class PolicyKeyError(ValueError):
    """The policy signing key file cannot be used."""


def load_or_create_policy_key(data_dir: Path) -> Ed25519PrivateKey:
    """Loads the policy signing key, creating it (0600, atomically: two collectors starting together agree)."""
    path = Path(data_dir) / POLICY_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = path.with_name(f".{POLICY_KEY_FILE}.{os.getpid()}.{time.time_ns()}")
        with open(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(fresh, path)  # whoever links first made the key; the others use it
            log.warning("created the policy signing key %s", path)
        except FileExistsError:
            pass
        finally:
            fresh.unlink()
    try:
        loose = stat.S_IMODE(path.stat().st_mode) & 0o077
        pem = path.read_bytes()
    except OSError as exc:
        raise PolicyKeyError(f"cannot read the policy signing key {path}: {exc.strerror}") from exc
    if loose:
        raise PolicyKeyError(f"{path} is accessible to other users; chmod 600 it")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PolicyKeyError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise PolicyKeyError(f"{path} is not an Ed25519 key")
    return key


def _answered(version: PolicyVersion, state: AgentPolicyState) -> bool:
    """Whether the agent answered this version: applied it (same hash) or refused it."""
    return ((state.applied_name, state.applied_version, state.applied_sha256) == (
        version.name, version.version, version.sha256)
        or (state.refused_name, state.refused_version) == (version.name, version.version))


class PolicyDelivery:
    """What each agent is still to be sent, kept in memory; safe to use from any thread."""

    def __init__(self, store: Store, key: Ed25519PrivateKey, *, resend_s: float = 5.0,
                 clock: Callable[[], int] = time.time_ns, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.key = key
        self.public_key = key.public_key().public_bytes_raw()
        self.resend_s = resend_s
        self.clock = clock
        self.monotonic = monotonic
        self._pending: dict[str, events_pb2.SignedPolicy] = {}
        self._reported: dict[str, AgentPolicyState] = {}
        self._signed: dict[tuple[str, int, str], events_pb2.SignedPolicy] = {}
        self._sent_at: dict[str, float] = {}
        self._refreshing = threading.Lock()

    # --- the Ack path (the gRPC loop's thread) ---------------------------------------------------------------
    def pending(self, agent_id: str) -> events_pb2.SignedPolicy | None:
        """The signed policy to put on this agent's next Ack, or None (nothing new, or sent just now)."""
        policy = self._pending.get(agent_id)
        if policy is None:
            return None
        now = self.monotonic()
        if now - self._sent_at.get(agent_id, -1e18) < self.resend_s:
            return None
        self._sent_at[agent_id] = now
        return policy

    # --- the ingest path (the committer's thread, inside the batch's transaction) -----------------------------
    def observe(self, tx: Transaction, agent_id: str, events: Sequence[StoredEvent]) -> None:
        """Records what a stored batch reports of the agent's policy, when it reports anything new."""
        known = self._reported.get(agent_id)
        for e in events:
            if e.kind in policies.REPORT_KINDS:
                break
            if e.kind in policies.STATUS_KINDS and "policy_name" in e.attributes and (
                    known is None or policies.said_in_status(e.attributes) != policies.applied_of(known)):
                break
        else:
            return
        state = policies.record_reports(tx=tx, agent_id=agent_id, events=events, now_ns=self.clock())
        if state is None:
            if known is None:  # nothing new, but now we know what is recorded: no look next time
                found = tx.get_agent_policy_state(agent_id)
                if found is not None:
                    self._reported[agent_id] = found
            return
        self._reported[agent_id] = state
        waiting = self._pending.get(agent_id)
        if waiting is not None and self._settled(waiting, state):
            self._pending.pop(agent_id, None)

    @staticmethod
    def _settled(policy: events_pb2.SignedPolicy, state: AgentPolicyState) -> bool:
        """Whether the agent answered this policy: applied it (same hash) or refused it."""
        applied = (state.applied_name, state.applied_version, state.applied_sha256) == (
            policy.name, policy.version, document_sha256(bytes(policy.document)))
        return applied or (state.refused_name, state.refused_version) == (policy.name, policy.version)

    # --- from the store -----------------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Rebuilds the map from the store; returns how many agents have a policy waiting."""
        with self._refreshing:
            with self.store.read() as tx:
                targets = tx.policy_targets()
                assignments = by_label_of(tx.list_assignments())
                latest = {v.name: v for v in tx.latest_policy_versions()}
                states = {s.agent_id: s for s in tx.list_agent_policy_states()}
            pending: dict[str, events_pb2.SignedPolicy] = {}
            for agent_id, labels in targets:
                wanted = policies.wanted_by_labels(labels, assignments, latest)
                if wanted is None:
                    continue
                state = states.get(agent_id)
                if state is None or not _answered(wanted, state):
                    pending[agent_id] = self._sign(wanted)
            self._reported = states
            self._pending = pending
            live = {(v.name, v.version, v.sha256) for v in latest.values()}
            self._signed = {k: v for k, v in self._signed.items() if k in live}
            return len(pending)

    def refresh_quietly(self) -> None:
        """``refresh`` for the periodic jobs and after a change: a store away is logged, the old map kept."""
        try:
            self.refresh()
        except Exception as exc:  # the map stays as it was; the next refresh tries again
            log.warning("policy delivery not refreshed: %s", exc)

    def _sign(self, version: PolicyVersion) -> events_pb2.SignedPolicy:
        key = (version.name, version.version, version.sha256)
        found = self._signed.get(key)
        if found is None:
            # issued at the version's creation: every collector signs the same bytes for one version
            found = self._signed[key] = sign_policy(name=version.name, version=version.version,
                                                    issued_unix_ns=version.created_at_ns,
                                                    document=version.document.encode("utf-8"), key=self.key)
        return found
