"""What the policy hook costs on the ingest path and on each Ack (CPU time, not wall clock).

    .venv/bin/python bench/policy_observe.py
"""
import resource, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from collector.events.models import StoredEvent
from collector.policy.delivery import PolicyDelivery
from collector.policy.models import AgentPolicyState
from collector.storage import MemoryStore

d = PolicyDelivery(MemoryStore(), Ed25519PrivateKey.generate())
d._reported["a"] = AgentPolicyState("a", 1, applied_name="finance", applied_version=3, applied_sha256="ab"*32)
beat = [StoredEvent("a", 1, 1, "e", "agent.heartbeat", 1, attributes={"policy_name": "finance", "policy_version": 3.0, "policy_sha256": "ab"*32, "interval_s": 30.0})]
files = [StoredEvent("a", 1, i, "e", "file.write", 1, path=f"/srv/f{i}") for i in range(250)]
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
for name, events, n in (("heartbeat batch, policy unchanged", beat, 200_000), ("250 file events", files, 2_000)):
    t = cpu()
    for _ in range(n):
        d.observe(None, "a", events)
    print(f"{name}: {(cpu() - t) / n * 1e6:.2f} us CPU per batch")
t = cpu()
for _ in range(1_000_000):
    d.pending("a")
print(f"pending() with nothing waiting: {(cpu() - t):.3f} us CPU per Ack")
