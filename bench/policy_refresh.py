"""How long the delivery map's refresh takes for a fleet (5,000 agents by default), on SQLite or PostgreSQL.

    .venv/bin/python bench/policy_refresh.py [--agents N] [--database-url postgresql://...]

Prints CPU time of this process (the collector's side of the refresh) and wall time, the median of 5.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.policy import service as policies
from collector.policy.delivery import PolicyDelivery
from collector.policy.models import AgentPolicyState
from collector.storage import open_store


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    store = open_store(args.database_url or tempfile.mkdtemp(prefix="shoumi-policy-bench-"))
    with store.transaction() as tx:
        for i in range(args.agents):
            tx._conn.exec_driver_sql(
                "INSERT INTO agents (agent_id, public_key, hostname, os, agent_version, enrolled_at_ns, liveness) "
                f"VALUES ('agt-{i:05d}', {'?' if store.dialect == 'sqlite' else '%s'}, 'ws{i}', 'Linux', '0.1', 1, "
                "'active')", (b"k" * 32,))
            tx.set_agent_labels(agent_id=f"agt-{i:05d}", labels=[f"dept:d{i % 20}", f"site:s{i % 3}"])
        for d in range(20):
            made, _ = policies.save_version(tx=tx, name=f"p{d}", document=f'sensitive_folders = ["/srv/d{d}"]\n',
                                            author="bench", comment="", now_ns=1)
            policies.assign(tx=tx, name=f"p{d}", labels=[f"dept:d{d}"], priority=d, actor="bench", now_ns=1)
        for i in range(0, args.agents, 2):  # half of them report their policy applied
            tx.put_agent_policy_state(AgentPolicyState(f"agt-{i:05d}", 1, applied_name=f"p{i % 20}", applied_version=1,
                                                       applied_sha256="00" * 32))
    delivery = PolicyDelivery(store, Ed25519PrivateKey.generate())
    cpu, wall = [], []
    for _ in range(5):
        c, w = _cpu(), time.perf_counter()
        waiting = delivery.refresh()
        cpu.append(_cpu() - c)
        wall.append(time.perf_counter() - w)
    print(f"{store.dialect}, {args.agents} agents, 20 policies, {waiting} waiting: refresh "
          f"{statistics.median(cpu) * 1e3:.0f} ms CPU, {statistics.median(wall) * 1e3:.0f} ms wall (median of 5)")
    store.close()


if __name__ == "__main__":
    main()
