"""Checks a case evidence bundle offline: the manifest, every signature, chain, proof and cosignature.

Theory of operation
-------------------
``verify_bundle(members, trust)`` runs the checks in a fixed order and stops at the first one that
does not hold, raising ``Failed(code, detail)``; each passed check adds a line to the report (what
was checked and how). The order goes from the outside in: the manifest and its signature, every
member's hash, then the contents: the agents' key certificates against the CA, each batch's
signature and the per-agent chain, each event against the batch that signed it, the tree heads'
signatures, the inclusion proofs against the anchor head and the consistency proofs to the latest,
a head given from elsewhere, the witnesses' cosignatures, the case's audit rows, its files, and the
agreement (shoumi_verify/agreement.py, when present).

Trust: with nothing but the bundle, the checks prove the bundle is intact and self-consistent under
the collector key it names. What ties it to the real collector is a key or head obtained elsewhere:
``--collector-key``, ``--tree-head`` (a head an auditor kept), or ``--witness-key`` (a witness the
operator does not control cosigned a head the bundle's history contains).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from shoumi.batch import DOMAIN, GENESIS_HASH
from shoumi.v1 import events_pb2

from shoumi_verify.formats import (BUNDLE_FORMAT, MANIFEST_DOMAIN, Cosignature, batch_leaf_hash, ed25519_ok, key_id,
                                   origin_of, tree_head_bytes)
from shoumi_verify.merkle import consistency_ok, inclusion_root

__all__ = ["Failed", "Trust", "Report", "verify_bundle", "parse_head", "SIGNED_FILES"]

SIGNED_FILES = ("manifest.json", "manifest.sig")
_AGENT_URI = "urn:shoumi:agent:"


class Failed(Exception):
    """The first check that does not hold: ``code`` (shoumi_verify/texts.py) and its details."""

    def __init__(self, code: str, **detail: Any) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.report: Report | None = None


@dataclass(frozen=True)
class Trust:
    """What the verifier was given from outside the bundle."""

    collector_key: bytes | None = None
    tree_head: Mapping[str, Any] | None = None
    witness_keys: tuple[bytes, ...] = ()


@dataclass
class Report:
    """The checks that held, in order, as (code, details); and facts for the description of the case."""

    passed: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def ok(self, code: str, **detail: Any) -> None:
        self.passed.append((code, detail))


def _json(members: Mapping[str, bytes], path: str) -> Any:
    try:
        return json.loads(members[path].decode("utf-8"))
    except KeyError as exc:
        raise Failed("manifest.missing", name=path) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise Failed("member.invalid", path=path, reason=f"not JSON ({str(exc)[:80]})") from exc


def _hex(value: Any, size: int | None, path: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError as exc:
        raise Failed("member.invalid", path=path, reason=f"{what} is not hex") from exc
    if size is not None and len(raw) != size:
        raise Failed("member.invalid", path=path, reason=f"{what} is not {size} bytes")
    return raw


def _int(value: Any, path: str, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Failed("member.invalid", path=path, reason=f"{what} is not a whole number")
    return value


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S UTC+8")


def parse_head(value: Any, path: str = "tree head") -> dict[str, Any]:
    """A tree head from JSON (the bundle's, or one kept elsewhere), with its byte fields decoded."""
    if not isinstance(value, Mapping):
        raise Failed("member.invalid", path=path, reason="a tree head is a JSON object")
    return {"tree_size": _int(value.get("tree_size"), path, "tree_size"),
            "timestamp_ns": _int(value.get("timestamp_ns"), path, "timestamp_ns"),
            "root_hash": _hex(value.get("root_hash"), 32, path, "root_hash"),
            "key_id": _hex(value.get("key_id"), 32, path, "key_id"),
            "signature": _hex(value.get("signature"), 64, path, "signature")}


def _head_ok(head: Mapping[str, Any], public_key: bytes) -> bool:
    return head["key_id"] == key_id(public_key) and ed25519_ok(
        public_key, head["signature"], tree_head_bytes(head["tree_size"], head["root_hash"], head["timestamp_ns"]))


# ---- the manifest ----------------------------------------------------------------------------

def _check_manifest(members: Mapping[str, bytes], trust: Trust, report: Report) -> bytes:
    for name in SIGNED_FILES + ("keys/collector.json",):
        if name not in members:
            raise Failed("manifest.missing", name=name)
    manifest = _json(members, "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT or not isinstance(
            manifest.get("members"), list):
        raise Failed("manifest.invalid", reason=f"not a {BUNDLE_FORMAT} manifest")
    collector = _json(members, "keys/collector.json")
    public = _hex(collector.get("public_key") if isinstance(collector, dict) else None, 32, "keys/collector.json",
                  "public_key")
    if manifest.get("collector_key_id") != key_id(public).hex():
        raise Failed("manifest.key", reason="the manifest names another key id")
    sig_text = members["manifest.sig"]  # exactly 128 lowercase hex digits and a newline
    signature = bytes.fromhex(sig_text[:128].decode()) if re.fullmatch(rb"[0-9a-f]{128}\n", sig_text) else b""
    if not ed25519_ok(public, signature, MANIFEST_DOMAIN + members["manifest.json"]):
        raise Failed("manifest.signature", key_id=key_id(public).hex()[:16])
    if trust.collector_key is not None:
        if trust.collector_key != public:
            raise Failed("collector_key.mismatch", bundle=key_id(public).hex()[:16],
                         given=key_id(trust.collector_key).hex()[:16])
        report.ok("ok.collector_key", source="--collector-key")
    listed: dict[str, Mapping[str, Any]] = {}
    for entry in manifest["members"]:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str):
            raise Failed("manifest.invalid", reason="a member without a path")
        if path in listed:
            raise Failed("member.duplicate", path=path)
        listed[path] = entry
    report.ok("ok.manifest", members=len(listed), key_id=key_id(public).hex()[:16])
    for path, entry in listed.items():
        if path not in members:
            raise Failed("member.missing", path=path)
        data = members[path]
        if entry.get("sha256") != hashlib.sha256(data).hexdigest() or entry.get("size") != len(data):
            raise Failed("member.hash", path=path)
    for path in sorted(members):
        if path not in listed and path not in SIGNED_FILES:
            raise Failed("member.extra", path=path)
    report.ok("ok.members")
    report.facts["case_id"] = manifest.get("case_id")
    report.facts["exported_at_ns"] = manifest.get("exported_at_ns")
    return public


# ---- certificates and agents ------------------------------------------------------------------

def _load_cert(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            assert cert.signature_hash_algorithm is not None
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except (InvalidSignature, AssertionError, ValueError, TypeError):
        return False
    return cert.issuer == issuer.subject


def _check_agents(members: Mapping[str, bytes], report: Report) -> dict[str, bytes]:
    try:
        ca = _load_cert(members["certs/ca.pem"])
    except KeyError as exc:
        raise Failed("manifest.missing", name="certs/ca.pem") from exc
    except ValueError as exc:
        raise Failed("cert.ca", reason="not a PEM certificate") from exc
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise Failed("cert.ca", reason="not marked as a CA")
    if not _signed_by(ca, ca):
        raise Failed("cert.ca", reason="its self-signature does not verify")
    agents = _json(members, "keys/agents.json")
    if not isinstance(agents, dict):
        raise Failed("member.invalid", path="keys/agents.json", reason="not an object")
    keys: dict[str, bytes] = {}
    for agent_id, info in sorted(agents.items()):
        if not isinstance(info, dict):
            raise Failed("member.invalid", path="keys/agents.json", reason=f"{agent_id} is not an object")
        public = _hex(info.get("public_key"), 32, "keys/agents.json", f"{agent_id}'s public_key")
        cert_path = info.get("certificate")
        if not isinstance(cert_path, str) or cert_path not in members:
            raise Failed("cert.agent", agent=agent_id, reason="its certificate is not in the bundle")
        try:
            cert = _load_cert(members[cert_path])
        except ValueError as exc:
            raise Failed("cert.agent", agent=agent_id, reason="not a PEM certificate") from exc
        if not _signed_by(cert, ca):
            raise Failed("cert.agent", agent=agent_id, reason="not signed by the CA of certs/ca.pem")
        cert_key = cert.public_key()
        if not isinstance(cert_key, ed25519.Ed25519PublicKey) or cert_key.public_bytes_raw() != public:
            raise Failed("cert.agent", agent=agent_id, reason="it certifies another key than keys/agents.json gives")
        try:
            uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        if _AGENT_URI + agent_id not in uris:
            raise Failed("cert.agent", agent=agent_id, reason="it is issued to another agent")
        keys[agent_id] = public
    names = ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    report.ok("ok.certs", agents=len(keys), ca=str(names[0].value) if names else "?")
    report.facts["agents"] = agents
    return keys


# ---- batches and the chain -------------------------------------------------------------------

@dataclass
class _Batch:
    file: str
    leaf_index: int
    canonical: bytes
    signature: bytes
    message: events_pb2.EventBatch
    agent_id: str
    epoch: int
    first_seq: int
    last_seq: int

    @property
    def seqs(self) -> str:
        return f"{self.first_seq}..{self.last_seq}"


def _check_batches(members: Mapping[str, bytes], agent_keys: Mapping[str, bytes], report: Report) -> list[_Batch]:
    listed = _json(members, "batches.json")
    if not isinstance(listed, list):
        raise Failed("member.invalid", path="batches.json", reason="not a list")
    out: list[_Batch] = []
    for meta in listed:
        if not isinstance(meta, dict):
            raise Failed("member.invalid", path="batches.json", reason="an entry is not an object")
        file = str(meta.get("canonical"))
        canonical, signature = members.get(file), members.get(str(meta.get("signature")))
        if canonical is None or signature is None:
            raise Failed("batch.decode", file=file, reason="its bytes or signature are not in the bundle")
        if not canonical.startswith(DOMAIN):
            raise Failed("batch.decode", file=file, reason="it does not start with the batch domain string")
        try:
            message = events_pb2.EventBatch.FromString(canonical[len(DOMAIN):])
        except DecodeError as exc:
            raise Failed("batch.decode", file=file, reason="the bytes do not decode") from exc
        if message.signature or DOMAIN + message.SerializeToString(deterministic=True) != canonical:
            raise Failed("batch.decode", file=file, reason="the bytes are not in canonical form")
        batch = _Batch(file, _int(meta.get("leaf_index"), "batches.json", "leaf_index"), canonical, signature, message,
                       message.agent_id, message.epoch, message.first_seq, message.first_seq + len(message.events) - 1)
        for name, signed in (("agent_id", batch.agent_id), ("epoch", batch.epoch), ("first_seq", batch.first_seq),
                             ("last_seq", batch.last_seq), ("batch_hash", hashlib.sha256(canonical).hexdigest())):
            if meta.get(name) != signed:
                raise Failed("batch.meta", file=file, field=name, listed=meta.get(name), signed=signed)
        key = agent_keys.get(batch.agent_id)
        if key is None:
            raise Failed("batch.agent", file=file, agent=batch.agent_id)
        if not ed25519_ok(key, signature, canonical):
            raise Failed("batch.signature", file=file, agent=batch.agent_id, seqs=batch.seqs)
        out.append(batch)
    report.ok("ok.batches", batches=len(out), agents=len({b.agent_id for b in out}))
    links = starts = 0
    by_chain: dict[tuple[str, int], list[_Batch]] = {}
    for b in out:
        by_chain.setdefault((b.agent_id, b.epoch), []).append(b)
    for chain in by_chain.values():
        chain.sort(key=lambda x: x.first_seq)
        for before, after in zip([None, *chain], chain):
            prev_hash = bytes(after.message.prev_batch_hash)
            if after.first_seq == 1:
                if prev_hash != GENESIS_HASH:
                    raise Failed("chain.genesis", file=after.file, epoch=after.epoch)
                starts += 1
            if before is None:
                continue
            if after.first_seq <= before.last_seq:
                raise Failed("chain.overlap", file=after.file, other=before.file)
            if after.first_seq == before.last_seq + 1:
                if prev_hash != hashlib.sha256(before.canonical).digest():
                    raise Failed("chain.link", file=after.file, seqs=after.seqs, prev=before.file)
                links += 1
    report.ok("ok.chain", links=links, starts=starts)
    return out


# ---- events --------------------------------------------------------------------------------

_SCALAR_FIELDS = (("id", "id"), ("kind", "kind"), ("time_ns", "time_unix_ns"), ("path", "path"),
                  ("dest_path", "dest_path"), ("size", "size"), ("sha256", "sha256"), ("user", "user"), ("uid", "uid"),
                  ("pid", "pid"), ("process", "process"), ("exe", "exe"))


def _check_events(members: Mapping[str, bytes], batches: Sequence[_Batch], report: Report) -> list[dict[str, Any]]:
    events = _json(members, "events.json")
    if not isinstance(events, list):
        raise Failed("member.invalid", path="events.json", reason="not a list")
    chains: dict[tuple[str, int], list[_Batch]] = {}
    for b in batches:
        chains.setdefault((b.agent_id, b.epoch), []).append(b)
    previous: tuple[str, int, int] | None = None
    for index, e in enumerate(events):
        if not isinstance(e, dict) or not isinstance(e.get("seq"), int) or not isinstance(e.get("epoch"), int):
            raise Failed("event.invalid", index=index, reason="not an event object")
        where = (str(e.get("agent_id")), e["epoch"], e["seq"])
        named = dict(agent=where[0], epoch=where[1], seq=where[2])
        if previous is not None and where <= previous:
            raise Failed("event.order", **named)
        previous = where
        batch = next((b for b in chains.get(where[:2], []) if b.first_seq <= where[2] <= b.last_seq), None)
        if batch is None:
            raise Failed("event.unsigned", **named)
        signed = batch.message.events[where[2] - batch.first_seq]
        if signed.seq != where[2]:
            raise Failed("event.field", field="seq", stored=where[2], signed=signed.seq, **named)
        for name, wire in _SCALAR_FIELDS:
            if e.get(name) != getattr(signed, wire):
                raise Failed("event.field", field=name, stored=e.get(name), signed=getattr(signed, wire), **named)
        try:
            stored_attributes = json.loads(e.get("attributes") or "{}")
        except (TypeError, ValueError):
            stored_attributes = e.get("attributes")
        signed_attributes = json_format.MessageToDict(signed.attributes) if signed.HasField("attributes") else {}
        if stored_attributes != signed_attributes:
            raise Failed("event.field", field="attributes", stored=e.get("attributes"),
                         signed=json.dumps(signed_attributes, ensure_ascii=False, sort_keys=True), **named)
    case = _json(members, "case.json")
    if not isinstance(case, dict):
        raise Failed("member.invalid", path="case.json", reason="not an object")
    present = {str(e.get("id")) for e in events}
    by_alert = case.get("alert_events")
    if not isinstance(by_alert, dict):
        raise Failed("member.invalid", path="case.json", reason="no alert_events")
    for alert_id, event_ids in sorted(by_alert.items()):
        for event_id in event_ids if isinstance(event_ids, list) else []:
            if str(event_id) not in present:
                raise Failed("event.missing", alert=alert_id, event=event_id)
    report.ok("ok.events", events=len(events))
    gone = case.get("events_not_stored")
    count = sum(v for v in gone.values() if isinstance(v, int)) if isinstance(gone, dict) else 0
    if count:
        report.ok("ok.events_not_stored", count=count)
    report.facts["events"] = events
    report.facts["case"] = case
    return events


# ---- the tree and its witnesses ----------------------------------------------------------------

def _check_tree(members: Mapping[str, bytes], public: bytes, batches: Sequence[_Batch], trust: Trust,
                report: Report) -> dict[int, dict[str, Any]]:
    doc = _json(members, "tree/heads.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("heads"), list):
        raise Failed("member.invalid", path="tree/heads.json", reason="no list of heads")
    heads: dict[int, dict[str, Any]] = {}
    for raw in doc["heads"]:
        head = parse_head(raw, "tree/heads.json")
        if not _head_ok(head, public):
            raise Failed("tree.head_signature", size=head["tree_size"])
        if head["tree_size"] in heads:
            raise Failed("tree.heads", reason=f"two heads of {head['tree_size']} leaves")
        heads[head["tree_size"]] = head
    if not heads:
        if batches:
            raise Failed("tree.heads", reason="no signed head, but batches to prove")
        return heads
    ordered = [heads[s] for s in sorted(heads)]
    for older, newer in zip(ordered, ordered[1:]):
        if newer["timestamp_ns"] < older["timestamp_ns"]:
            raise Failed("tree.heads", reason=f"the head of {newer['tree_size']} leaves is older than that of {older['tree_size']}")
    latest = ordered[-1]
    if doc.get("latest") != latest["tree_size"] or (batches and doc.get("anchor") not in heads):
        raise Failed("tree.heads", reason="the anchor or the latest head is not among the heads")
    report.ok("ok.heads", heads=len(heads), latest=latest["tree_size"], time=_when(latest["timestamp_ns"]))
    inclusion = _json(members, "tree/inclusion.json")
    if not isinstance(inclusion, list):
        raise Failed("member.invalid", path="tree/inclusion.json", reason="not a list")
    proofs: dict[int, dict[str, Any]] = {}
    for entry in inclusion:
        if not isinstance(entry, dict) or not isinstance(entry.get("proof"), list):
            raise Failed("member.invalid", path="tree/inclusion.json", reason="an entry without a proof")
        proofs[_int(entry.get("leaf_index"), "tree/inclusion.json", "leaf_index")] = entry
    anchor_size = doc.get("anchor")
    anchor = heads.get(anchor_size) if isinstance(anchor_size, int) else None
    for b in batches:
        p = proofs.get(b.leaf_index)
        if p is None or anchor is None or p.get("tree_size") != anchor["tree_size"]:
            raise Failed("tree.inclusion", file=b.file, leaf=b.leaf_index, size=anchor["tree_size"] if anchor else 0)
        path = [_hex(x, 32, "tree/inclusion.json", "a proof hash") for x in p["proof"]]
        root = inclusion_root(b.leaf_index, anchor["tree_size"], batch_leaf_hash(b.canonical, b.signature), path)
        if root != anchor["root_hash"]:
            raise Failed("tree.inclusion", file=b.file, leaf=b.leaf_index, size=anchor["tree_size"])
    if batches and anchor is not None:
        report.ok("ok.inclusion", size=anchor["tree_size"])
    consistency = _json(members, "tree/consistency.json")
    if not isinstance(consistency, list):
        raise Failed("member.invalid", path="tree/consistency.json", reason="not a list")
    by_from = {c.get("from_size"): c for c in consistency if isinstance(c, dict)}
    for head in ordered[:-1]:
        c = by_from.get(head["tree_size"])
        if c is None or c.get("to_size") != latest["tree_size"] or not isinstance(c.get("proof"), list):
            raise Failed("tree.consistency", old=head["tree_size"], new=latest["tree_size"])
        path = [_hex(x, 32, "tree/consistency.json", "a proof hash") for x in c["proof"]]
        if not consistency_ok(head["tree_size"], latest["tree_size"], head["root_hash"], latest["root_hash"], path):
            raise Failed("tree.consistency", old=head["tree_size"], new=latest["tree_size"])
    if len(ordered) > 1:
        report.ok("ok.consistency", proofs=len(ordered) - 1)
    if trust.tree_head is not None:
        given = parse_head(trust.tree_head, "--tree-head")
        size = given["tree_size"]
        if not _head_ok(given, public):
            raise Failed("tree.external", size=size, reason="its signature does not verify under the bundle's collector key")
        mine = heads.get(size)
        if mine is None:
            raise Failed("tree.external", size=size, reason="the bundle carries no head of that size to relate it to "
                         "(export with --prove-from SIZE)")
        if mine["root_hash"] != given["root_hash"]:
            raise Failed("tree.external", size=size, reason="the bundle's head of that size has another root: a fork")
        report.ok("ok.external_head", size=size)
    report.facts["heads"] = ordered
    return heads


def _check_witnesses(members: Mapping[str, bytes], public: bytes, heads: Mapping[int, Mapping[str, Any]], trust: Trust,
                     report: Report) -> None:
    listed = _json(members, "witness/cosignatures.json")
    known = _json(members, "witness/keys.json")
    if not isinstance(listed, list) or not isinstance(known, dict):
        raise Failed("member.invalid", path="witness/cosignatures.json", reason="not a list, or keys not an object")
    keys: dict[bytes, bytes] = {}
    for name, value in known.items():
        k = _hex(value, 32, "witness/keys.json", f"{name}'s key")
        keys[key_id(k)] = k
    for k in trust.witness_keys:
        keys[key_id(k)] = k
    origin = origin_of(public)
    valid: list[tuple[str, bytes, int]] = []
    for raw in listed:
        if not isinstance(raw, dict):
            raise Failed("member.invalid", path="witness/cosignatures.json", reason="an entry is not an object")
        c = Cosignature(str(raw.get("witness")), _hex(raw.get("witness_key_id"), 32, "witness", "witness_key_id"),
                        _int(raw.get("tree_size"), "witness", "tree_size"),
                        _hex(raw.get("root_hash"), 32, "witness", "root_hash"),
                        _int(raw.get("timestamp"), "witness", "timestamp"),
                        _hex(raw.get("signature"), 64, "witness", "signature"))
        head = heads.get(c.tree_size)
        if head is None or head["root_hash"] != c.root_hash:
            raise Failed("witness.head", witness=c.witness, size=c.tree_size)
        known_key = keys.get(c.witness_key_id)
        if known_key is None:
            raise Failed("witness.unknown", witness=c.witness, size=c.tree_size)
        if not c.ok(known_key, origin):
            raise Failed("witness.signature", witness=c.witness, size=c.tree_size)
        valid.append((c.witness, c.witness_key_id, c.tree_size))
    for k in trust.witness_keys:
        if not any(kid == key_id(k) for _n, kid, _s in valid):
            raise Failed("witness.required", key_id=key_id(k).hex()[:16])
    if valid:
        names = ", ".join(sorted({f"{n} @ {s}" for n, _k, s in valid}))
        if trust.witness_keys:
            report.ok("ok.witnesses", count=len(valid), names=names,
                      trusted="including the witness key given with --witness-key, obtained apart from the bundle",
                      trusted_zh="其中包括 --witness-key 给出的、独立于证据包获得的见证者密钥")
        else:
            report.ok("ok.witnesses", count=len(valid), names=names,
                      trusted="the witness keys come from the bundle itself: give --witness-key to rely on them",
                      trusted_zh="见证者密钥取自证据包本身：请用 --witness-key 提供独立获得的密钥")
    else:
        report.ok("ok.no_witness")
    report.facts["cosignatures"] = valid


# ---- the case's records ----------------------------------------------------------------------

def _audit_hash(row: Mapping[str, Any]) -> str:
    details = json.dumps(dict(row.get("details") or {}), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    payload = json.dumps([row.get("prev_hash"), row.get("at_ns"), row.get("actor"), row.get("action"),
                          row.get("target"), details], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _check_records(members: Mapping[str, bytes], report: Report) -> None:
    rows = _json(members, "audit.json")
    if not isinstance(rows, list):
        raise Failed("member.invalid", path="audit.json", reason="not a list")
    before: Mapping[str, Any] | None = None
    for row in rows:
        if not isinstance(row, dict) or _audit_hash(row) != row.get("row_hash"):
            raise Failed("audit.row", id=row.get("id") if isinstance(row, dict) else "?")
        if before is not None and isinstance(row.get("id"), int) and row["id"] == before.get("id", 0) + 1 \
                and row.get("prev_hash") != before.get("row_hash"):
            raise Failed("audit.link", id=row["id"], prev=before.get("id"))
        before = row
    report.ok("ok.audit", rows=len(rows))
    report.facts["audit"] = rows
    case = report.facts.get("case") or {}
    attachments = case.get("attachments") or []
    for a in attachments:
        member = members.get(str(a.get("member")))
        if member is None:
            raise Failed("attachment.missing", name=a.get("display_name"), sha256=a.get("sha256"))
        if hashlib.sha256(member).hexdigest() != a.get("sha256") or len(member) != a.get("size"):
            raise Failed("attachment.hash", name=a.get("display_name"))
    report.ok("ok.attachments", count=len(attachments))


def _agreement_checker() -> tuple[Callable[..., list[str]], Callable[..., list[str]]] | None:
    try:
        from shoumi_verify import agreement  # H7's part (issue 12): absent, the agreement is not checked
    except ImportError:
        return None
    return agreement.check_agreement, agreement.describe


def _check_agreement(members: Mapping[str, bytes], report: Report, lang: str,
                     checker: tuple[Callable[..., list[str]], Callable[..., list[str]]] | None) -> None:
    mine = {p[len("agreement/"):]: data for p, data in members.items() if p.startswith("agreement/")}
    if not mine:
        report.ok("ok.no_agreement")
        return
    if checker is None:
        report.ok("ok.agreement_unchecked")
        return
    check, describe = checker
    problems = check(mine)
    if problems:
        raise Failed("agreement.problem", problem="; ".join(problems))
    report.ok("ok.agreement", summary="; ".join(describe(mine, lang)))


def verify_bundle(members: Mapping[str, bytes], trust: Trust = Trust(), *, lang: str = "zh",
                  agreement: Any = "auto") -> Report:
    """Runs every check in order; returns the report, or raises Failed at the first that does not hold."""
    report = Report()
    try:
        _run(members, trust, lang, agreement, report)
    except Failed as exc:
        exc.report = report  # the checks that held before it
        raise
    return report


def _run(members: Mapping[str, bytes], trust: Trust, lang: str, agreement: Any, report: Report) -> None:
    report.ok("ok.archive", members=len(members), bytes=sum(len(v) for v in members.values()))
    stage = "manifest.json"
    try:  # a member of the wrong shape is named, never a traceback: a signed bundle may still be hostile
        public = _check_manifest(members, trust, report)
        if trust.collector_key is None:
            report.ok("ok.collector_key_bundle")
        stage = "keys/agents.json"
        agent_keys = _check_agents(members, report)
        stage = "batches.json"
        batches = _check_batches(members, agent_keys, report)
        stage = "events.json"
        _check_events(members, batches, report)
        stage = "tree/heads.json"
        heads = _check_tree(members, public, batches, trust, report)
        stage = "witness/cosignatures.json"
        _check_witnesses(members, public, heads, trust, report)
        stage = "audit.json"
        _check_records(members, report)
        stage = "agreement/"
        _check_agreement(members, report, lang, _agreement_checker() if agreement == "auto" else agreement)
    except (TypeError, KeyError, AttributeError, ValueError, IndexError, OverflowError, RecursionError) as exc:
        raise Failed("member.invalid", path=stage, reason=f"unexpected content ({type(exc).__name__})") from exc
