"""A case with real signed evidence, built in-process: agents' signed batches through the real ingest
path into SQLite, signed tree heads, alerts, a case with a loss document, and the exported bundle."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.alerts.service import raise_alert
from collector.cases import service as cases
from collector.evidence.bundle import WitnessKey
from collector.evidence.service import EvidenceKeys, Exported, export_case
from collector.ingest.service import IngestService
from collector.storage import SqlStore, open_store
from collector.transparency import TreeHeadSigner, load_or_create_tree_key

from tests.collector.evidence_helpers import writers
from tests.conftest import PerCall

LOSS_DOC = "第三方鉴定报告：设计图纸泄露造成的直接损失".encode()


@dataclass
class CaseWorld:
    data_dir: Path
    store: SqlStore
    case_id: int
    signer: TreeHeadSigner
    event_ids: list[str]


def build_case(data_dir: Path, *, batches: int = 4) -> CaseWorld:
    """Two agents, ``batches`` signed batches each, a head after every batch, alerts on alice's reads, a case."""
    store = open_store(data_dir)
    ingest = IngestService(store)
    signer = TreeHeadSigner(store, load_or_create_tree_key(data_dir))
    a, b = writers(PerCall(store), "agt-alice", "agt-bob")  # type: ignore[arg-type]
    evidence: list[str] = []
    try:
        for i in range(batches):
            batch = a.next(3, user="alice", path=f"/srv/design/plan-{i}.dwg")
            ingest.ingest(batch)
            ingest.ingest(b.next(2, user="bob"))
            if i in (1, 2):
                evidence += [e.id for e in batch.events]
            signer.sign_if_grown()
    finally:
        ingest.close()
    now = time.time_ns()
    with store.transaction() as tx:
        alerts = [raise_alert(tx=tx, rule="read_burst", severity="high", summary="alice read many design files",
                              now_ns=now, agent_id="agt-alice", user="alice", event_ids=evidence[:3]),
                  raise_alert(tx=tx, rule="bulk_read", severity="high", summary="bulk read", now_ns=now,
                              agent_id="agt-alice", user="alice", event_ids=evidence[3:])]
        case = cases.open_case(tx=tx, alert_ids=[int(x.id or 0) for x in alerts], title="设计图纸外传",
                               actor="ana", now_ns=now)
        cases.attach(tx=tx, case_id=int(case.id or 0), filename="鉴定报告.pdf", content=LOSS_DOC,
                     content_type="application/pdf", actor="hana", now_ns=now + 1, max_bytes=1 << 20)
        cases.comment(tx=tx, case_id=int(case.id or 0), body="员工已被约谈", actor="ana", now_ns=now + 2)
    return CaseWorld(data_dir, store, int(case.id or 0), signer, evidence)


def export(world: CaseWorld, *, witnesses: tuple[WitnessKey, ...] = (), prove_from: tuple[int, ...] = (),
           with_report: bool = False) -> Exported:
    keys = EvidenceKeys.load(world.data_dir, witnesses)
    with world.store.transaction() as tx:
        return export_case(tx, world.case_id, keys=keys, actor="cli:test", now_ns=time.time_ns(),
                           prove_from=prove_from, with_report=with_report)


def witness_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()
