"""The members of a case's evidence bundle, read in the caller's transaction, and the signed zip around them.

Theory of operation
-------------------
``case_members`` gathers, for one case, everything a third party needs to check the case offline
(docs/evidence-bundle.md lists every member): the case's events exactly as stored, the signed batches
that carried them (canonical bytes and Ed25519 signature, the agent's own proof), an inclusion proof
of each batch's Merkle leaf against one signed tree head (the *anchor*: the smallest head covering
them all), every other head the bundle names (each witness's last cosigned head, the latest) with a
consistency proof from each to the latest, the witnesses' cosignatures on those heads and their keys,
the agents' keys with a certificate from the collector's CA binding each key to its agent, the CA
certificate, the case's files, its audit rows, the payroll hand-offs, and the agreement's members
(collector/agreements/evidence.py, when that part is installed). ``seal`` adds ``manifest.json``
(every member's path, SHA-256 and size) and ``manifest.sig`` (Ed25519 with the collector's tree-head
key over ``MANIFEST_DOMAIN`` ‖ manifest). ``zip_bytes`` writes the members in path order.

Nothing here writes anything; errors are ``EvidenceError`` (404 no such case, 409 nothing to prove yet).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
import stat
import zipfile
from typing import Any, Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from shoumi.tls import AGENT_URI_PREFIX
from shoumi_verify.formats import BUNDLE_FORMAT, MANIFEST_DOMAIN, key_id, origin_of

from collector.domain.evidence import BatchRow, SignedTreeHead, TreeLeaf
from collector.domain.merkle import consistency_proof, inclusion_proof
from collector.events.models import StoredBatch, StoredEvent
from collector.pki import CertificateAuthority
from collector.storage.base import Transaction

__all__ = ["EvidenceError", "case_members", "seal", "zip_bytes", "head_json", "SAFE_PATH", "WitnessKey"]

SAFE_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,3}$")
_AGENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PAGE = 1000
_MAX_EVENTS = 100_000


class EvidenceError(Exception):
    """A bundle that cannot be made; ``status`` is an HTTP status hint."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class WitnessKey:
    """A witness the collector knows: its name and raw Ed25519 public key."""

    name: str
    public_key: bytes


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _json(value: Any) -> bytes:
    return (json.dumps(_plain(value), ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode()


def head_json(head: SignedTreeHead) -> dict[str, Any]:
    """A signed tree head as the bundle (and ``--tree-head FILE``) writes it."""
    return {"tree_size": head.tree_size, "root_hash": head.root_hash.hex(), "timestamp_ns": head.timestamp_ns,
            "key_id": head.key_id.hex(), "signature": head.signature.hex()}


def _case_events(tx: Transaction, alert_ids: Sequence[int]) -> tuple[list[StoredEvent], dict[str, list[str]]]:
    seen: dict[tuple[str, int, int], StoredEvent] = {}
    by_alert: dict[str, list[str]] = {}
    for alert_id in alert_ids:
        after: tuple[int, int] | None = None
        mine = by_alert.setdefault(str(alert_id), [])
        while True:
            page = tx.evidence_events(alert_id=alert_id, after=after, limit=_PAGE)
            for e in page:
                seen.setdefault((e.agent_id, e.epoch, e.seq), e)
                mine.append(e.id)
            if len(seen) > _MAX_EVENTS:
                raise EvidenceError(413, f"the case holds more than {_MAX_EVENTS} events: too many for one bundle")
            if len(page) < _PAGE:
                break
            after = (page[-1].time_ns, page[-1].row_id or 0)
    return [seen[k] for k in sorted(seen)], by_alert


def _event_rows(tx: Transaction, b: StoredBatch) -> dict[int, dict[str, Any]]:
    """The events rows of one batch, every column as stored, by seq (one query a batch)."""
    out: dict[int, dict[str, Any]] = {}
    for r in tx.chain_event_rows(agent_id=b.agent_id, after=(b.epoch, b.first_seq - 1, 2**62),
                                 limit=b.last_seq - b.first_seq + 1):
        if r.epoch == b.epoch and b.first_seq <= r.seq <= b.last_seq:
            out[r.seq] = {"row_id": r.row_id, "agent_id": r.agent_id, "epoch": r.epoch, "seq": r.seq,
                          "id": r.event_id, "kind": r.kind, "time_ns": r.time_ns, "path": r.path,
                          "dest_path": r.dest_path, "size": r.size, "sha256": r.sha256, "user": r.user_name,
                          "uid": r.uid, "pid": r.pid, "process": r.process, "exe": r.exe, "attributes": r.attributes}
    return out


def _row_of(rows: Mapping[int, dict[str, Any]], e: StoredEvent) -> dict[str, Any]:
    found = rows.get(e.seq)
    if found is None:
        raise EvidenceError(409, f"event {e.agent_id}/{e.epoch}/{e.seq} vanished while the bundle was made")
    return found


def _leaf_hashes(tx: Transaction, size: int) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < size:
        page = tx.list_tree_leaves(start=len(out), limit=_PAGE)
        if not page:
            break
        for leaf in page:
            if leaf.leaf_index != len(out):
                raise EvidenceError(409, f"tree leaf {len(out)} is missing: run shoumi-collector verify")
            out.append(leaf.leaf_hash)
    if len(out) < size:
        raise EvidenceError(409, f"the signed tree has {size} leaves but {len(out)} are stored: run verify")
    return out[:size]


def agent_key_certificate(ca: CertificateAuthority, agent_id: str, public_key: bytes, enrolled_at_ns: int) -> bytes:
    """A certificate from the collector's CA binding the agent's enrolled Ed25519 batch key to its id (PEM)."""
    start = dt.datetime.fromtimestamp(enrolled_at_ns / 1e9, dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id),
                                 x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Shoumi agent batch key")]))
        .issuer_name(ca.cert.subject)
        .public_key(Ed25519PublicKey.from_public_bytes(public_key))
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(AGENT_URI_PREFIX + agent_id)]),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _agreement_members(tx: Transaction, case_id: int) -> dict[str, bytes]:
    try:
        from collector.agreements.evidence import bundle_members  # H7's part (issue 12); absent: no agreement
    except ImportError:
        return {}
    found = bundle_members(tx, case_id)
    return {f"agreement/{name}": bytes(content) for name, content in found.items()}


def case_members(tx: Transaction, case_id: int, *, tree_public_key: bytes, ca: CertificateAuthority,
                 witnesses: Sequence[WitnessKey] = (), prove_from: Sequence[int] = (),
                 now_ns: int) -> dict[str, bytes]:
    """Every member of the case's bundle but the manifest, by its path in the zip."""
    case = tx.get_case(case_id)
    if case is None:
        raise EvidenceError(404, f"no case {case_id}")
    members: dict[str, bytes] = {}
    events, evidence = _case_events(tx, case.alert_ids)
    # the batches that carried the events, each with its leaf
    carried: dict[int, tuple[BatchRow, TreeLeaf]] = {}
    rows_of: dict[int, dict[int, dict[str, Any]]] = {}  # leaf index -> seq -> the event's row
    event_rows: list[dict[str, Any]] = []
    current: tuple[BatchRow, TreeLeaf] | None = None
    for e in events:  # in (agent, epoch, seq) order: one batch lookup per batch, not per event
        if current is not None and (current[0].batch.agent_id, current[0].batch.epoch) == (e.agent_id, e.epoch) \
                and current[0].batch.first_seq <= e.seq <= current[0].batch.last_seq:
            event_rows.append(_row_of(rows_of[current[1].leaf_index], e))
            continue
        found = tx.batch_of_event(agent_id=e.agent_id, epoch=e.epoch, seq=e.seq)
        if found is None:
            raise EvidenceError(409, f"no stored batch carries event {e.agent_id}/{e.epoch}/{e.seq}: run verify")
        row, leaf = found
        if leaf is None:
            raise EvidenceError(409, "some of the case's batches are not under a signed tree head yet; "
                                "try again after the next head (tree_head_seconds)")
        carried[leaf.leaf_index] = current = (row, leaf)
        rows_of[leaf.leaf_index] = _event_rows(tx, row.batch)
        event_rows.append(_row_of(rows_of[leaf.leaf_index], e))
    latest = tx.latest_tree_head()
    batches_meta: list[dict[str, Any]] = []
    heads: dict[int, SignedTreeHead] = {}
    if latest is not None:
        heads[latest.tree_size] = latest
    anchor = latest
    if carried:
        anchor = tx.first_head_covering(max(carried))
        if anchor is None or latest is None:
            raise EvidenceError(409, "the case's batches are not under a signed tree head yet")
        heads[anchor.tree_size] = anchor
    for w in witnesses:
        last = tx.latest_cosignature(w.name)
        head = tx.tree_head_at(last.tree_size) if last is not None else None
        if head is not None:
            heads[head.tree_size] = head
    for size in prove_from:
        head = tx.tree_head_at(size)
        if head is None:
            raise EvidenceError(422, f"there is no signed tree head of {size} leaves")
        heads[size] = head
    hashes = _leaf_hashes(tx, latest.tree_size) if latest is not None else []
    inclusion = []
    for index, (row, leaf) in sorted(carried.items()):
        b = row.batch
        name = f"batches/{index:010d}"
        members[f"{name}.canonical"] = b.canonical
        members[f"{name}.sig"] = b.signature
        batches_meta.append({"leaf_index": index, "canonical": f"{name}.canonical", "signature": f"{name}.sig",
                             "agent_id": b.agent_id, "epoch": b.epoch, "first_seq": b.first_seq,
                             "last_seq": b.last_seq, "batch_hash": b.batch_hash.hex(),
                             "received_at_ns": b.received_at_ns})
        assert anchor is not None
        inclusion.append({"leaf_index": index, "tree_size": anchor.tree_size,
                          "proof": [p.hex() for p in inclusion_proof(hashes, index, anchor.tree_size)]})
    members["events.json"] = _json(event_rows)
    members["batches.json"] = _json(batches_meta)
    ordered = [heads[s] for s in sorted(heads)]
    members["tree/heads.json"] = _json({"anchor": None if anchor is None else anchor.tree_size,
                                        "latest": None if latest is None else latest.tree_size,
                                        "heads": [head_json(h) for h in ordered]})
    members["tree/inclusion.json"] = _json(inclusion)
    members["tree/consistency.json"] = _json([
        {"from_size": h.tree_size, "to_size": latest.tree_size,
         "proof": [p.hex() for p in consistency_proof(hashes, h.tree_size, latest.tree_size)]}
        for h in ordered if latest is not None and h.tree_size < latest.tree_size])
    cosigs = tx.cosignatures(tree_sizes=sorted(heads))
    members["witness/cosignatures.json"] = _json([
        {"witness": c.witness, "witness_key_id": c.witness_key_id.hex(), "tree_size": c.tree_size,
         "root_hash": c.root_hash.hex(), "timestamp": c.timestamp, "signature": c.signature.hex()} for c in cosigs])
    members["witness/keys.json"] = _json({w.name: w.public_key.hex() for w in witnesses})
    members["keys/collector.json"] = _json({"public_key": tree_public_key.hex(), "key_id": key_id(tree_public_key).hex(),
                                            "origin": origin_of(tree_public_key)})
    agents: dict[str, Any] = {}
    members["certs/ca.pem"] = ca.cert_pem
    for agent_id in sorted({str(b["agent_id"]) for b in batches_meta}):
        agent = tx.get_agent(agent_id)
        if agent is None or not _AGENT.match(agent_id):
            raise EvidenceError(409, f"agent {agent_id[:64]!r} of the case's batches is not enrolled: run verify")
        cert_path = f"certs/agents/{agent_id}.pem"
        members[cert_path] = agent_key_certificate(ca, agent_id, agent.public_key, agent.enrolled_at_ns)
        agents[agent_id] = {"public_key": agent.public_key.hex(), "hostname": agent.hostname, "os": agent.os,
                            "agent_version": agent.agent_version, "enrolled_at_ns": agent.enrolled_at_ns,
                            "revoked_at_ns": agent.revoked_at_ns, "certificate": cert_path,
                            "tls_certificates": [_plain(c) for c in tx.agent_certificates(agent_id)]}
    members["keys/agents.json"] = _json(agents)
    assert case.id is not None
    attachments = tx.list_attachments(case.id)
    for att in attachments:
        content = tx.attachment_content(att.sha256)
        if content is None:
            raise EvidenceError(409, f"the content of attachment {att.id} ({att.sha256}) is missing")
        members[f"attachments/{att.sha256}.bin"] = content
    alerts = tx.get_alerts(list(case.alert_ids))
    members["case.json"] = _json({
        "alert_events": evidence,  # each alert's evidence events still stored
        # how many of each alert's evidence events retention deleted
        "events_not_stored": {str(a.id): a.evidence_count - len(evidence.get(str(a.id), [])) for a in alerts
                              if a.evidence_count > len(evidence.get(str(a.id), []))},
        "case": case, "alerts": alerts, "history": tx.case_history(case.id), "comments": tx.list_comments(case.id),
        "hr_records": tx.hr_records(case.id),
        "attachments": [{**_plain(a), "member": f"attachments/{a.sha256}.bin"} for a in attachments],
    })
    members["audit.json"] = _json(_case_audit(tx, case.id))
    handoffs = tx.handoffs(case.id)
    if handoffs:
        members["payroll/handoffs.json"] = _json(handoffs)
    members.update(_agreement_members(tx, case.id))
    for path in members:
        if not SAFE_PATH.match(path):
            raise EvidenceError(500, f"unsafe member name {path[:80]!r}")
    return members


def _case_audit(tx: Transaction, case_id: int) -> list[dict[str, Any]]:
    from collector.audit.models import AuditFilter

    rows: list[dict[str, Any]] = []
    cursor: int | None = None
    while True:
        page = tx.list_audit(cursor=cursor, limit=_PAGE, filter=AuditFilter(target=str(case_id)), oldest_first=True)
        for e in page.items:
            if str(e.action).startswith(("case.", "evidence.", "agreement.")):
                rows.append({"id": e.id, "at_ns": e.at_ns, "actor": e.actor, "action": e.action, "target": e.target,
                             "details": dict(e.details), "prev_hash": e.prev_hash, "row_hash": e.row_hash})
        if not page.next_cursor:
            return rows
        cursor = int(page.next_cursor)


def manifest_bytes(members: Mapping[str, bytes], *, case_id: int, tree_public_key: bytes, now_ns: int) -> bytes:
    """The manifest: every member's path, SHA-256 and size, in path order."""
    listing = [{"path": p, "sha256": hashlib.sha256(members[p]).hexdigest(), "size": len(members[p])}
               for p in sorted(members)]
    return (json.dumps({"format": BUNDLE_FORMAT, "case_id": case_id, "exported_at_ns": now_ns,
                        "collector_key_id": key_id(tree_public_key).hex(), "members": listing},
                       ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode()


def seal(members: Mapping[str, bytes], *, key: Ed25519PrivateKey, case_id: int, now_ns: int) -> dict[str, bytes]:
    """The members with ``manifest.json`` and its detached signature ``manifest.sig`` (hex) added."""
    public = key.public_key().public_bytes_raw()
    manifest = manifest_bytes(members, case_id=case_id, tree_public_key=public, now_ns=now_ns)
    return {**members, "manifest.json": manifest, "manifest.sig": (key.sign(MANIFEST_DOMAIN + manifest).hex() + "\n").encode()}


def zip_bytes(members: Mapping[str, bytes]) -> bytes:
    """The bundle as a zip, members in path order with a fixed time (the same members give the same zip)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for path in sorted(members):
            info = zipfile.ZipInfo(path, date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            z.writestr(info, members[path])
    return buffer.getvalue()
