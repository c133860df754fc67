"""What the policy hook costs on the ingest path and on each Ack (CPU time of this process, not wall clock).

    .venv/bin/python bench/policy_observe.py

A batch that carries no policy report is looked at without the store (the transaction is never touched).
"""

from __future__ import annotations

import resource
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.events.models import StoredEvent
from collector.policy.delivery import PolicyDelivery
from collector.policy.models import AgentPolicyState
from collector.storage import MemoryStore


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    delivery = PolicyDelivery(MemoryStore(), Ed25519PrivateKey.generate())
    delivery._reported["a"] = AgentPolicyState("a", 1, applied_name="finance", applied_version=3,
                                               applied_sha256="ab" * 32)
    beat = [StoredEvent("a", 1, 1, "e", "agent.heartbeat", 1, attributes={
        "policy_name": "finance", "policy_version": 3.0, "policy_sha256": "ab" * 32, "interval_s": 30.0})]
    files = [StoredEvent("a", 1, i, "e", "file.write", 1, path=f"/srv/f{i}") for i in range(250)]
    no_tx = cast(Any, None)  # neither batch needs the store
    for name, events, n in (("heartbeat batch, policy unchanged", beat, 200_000), ("250 file events", files, 2_000)):
        start = _cpu()
        for _ in range(n):
            delivery.observe(no_tx, "a", events)
        print(f"{name}: {(_cpu() - start) / n * 1e6:.2f} us CPU per batch")
    start = _cpu()
    for _ in range(1_000_000):
        delivery.pending("a")
    print(f"pending() with nothing waiting: {(_cpu() - start):.3f} us CPU per Ack")


if __name__ == "__main__":
    main()
