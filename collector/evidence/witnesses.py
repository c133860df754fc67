"""Gives the collector's signed tree heads to its witnesses and keeps their cosignatures.

Theory of operation: ``WitnessSubmitter.run_once()`` runs after each tree-head signing (and by
``case export``). For each configured witness whose last cosignature is older than the latest head,
it sends the latest head with the consistency proof from the witness's last cosigned size
(POST /add-checkpoint, shoumi_verify/formats.py). A 409 answer names the witness's own size (it
cosigned a head this collector has no record of, or lost one): the submitter proves from that size
once more. A cosignature is checked under the witness's configured key before it is kept; a witness
that is down, slow, or refuses (422: it saw a fork) is logged and tried again next time. The leaf
hashes are read once and extended as the tree grows (32 bytes a batch).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import httpx

from shoumi_verify.formats import (Cosignature, ProtocolError, add_checkpoint_request, checkpoint_note, key_id,
                                   origin_of, parse_cosignature_line)

from collector.domain.evidence import SignedTreeHead
from collector.domain.merkle import consistency_proof
from collector.evidence.bundle import WitnessKey
from collector.evidence.models import StoredCosignature
from collector.storage.base import Store

__all__ = ["WitnessEndpoint", "WitnessSubmitter", "submitter_for", "bounded_post"]

log = logging.getLogger("shoumi.collector.witnesses")
_PAGE = 1000
MAX_ANSWER_BYTES = 1 << 20  # a cosignature line is ~150 bytes, a timestamp token a few KiB


def bounded_post(client: httpx.Client, url: str, *, content: bytes, total_s: float,
                 headers: dict[str, str] | None = None) -> tuple[httpx.Response, bytes]:
    """POSTs and reads the whole answer within ``total_s`` seconds and MAX_ANSWER_BYTES (httpx's timeouts are per
    read: a server sending a byte a second would hold the caller for ever). Raises httpx.HTTPError or ValueError."""
    deadline = time.monotonic() + total_s
    sent = {**(headers or {}), "Accept-Encoding": "identity"}  # no compressed bomb either
    with client.stream("POST", url, content=content, headers=sent) as reply:
        body = bytearray()
        for chunk in reply.iter_raw():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise ValueError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"no whole answer within {total_s:g} s")
    return reply, bytes(body)


@dataclass(frozen=True)
class WitnessEndpoint:
    """A witness: its name, its URL and its raw Ed25519 public key."""

    name: str
    url: str
    public_key: bytes


class WitnessSubmitter:
    """Submits new heads to witnesses; keeps what they cosign."""

    def __init__(self, store: Store, tree_public_key: bytes, witnesses: Sequence[WitnessEndpoint], *,
                 timeout_s: float = 5.0, client: httpx.Client | None = None) -> None:
        self.store = store
        self.tree_public_key = tree_public_key
        self.origin = origin_of(tree_public_key)
        self.witnesses = tuple(witnesses)
        self.client = client or httpx.Client(timeout=timeout_s, trust_env=False)
        self.timeout_s = timeout_s
        self._hashes: list[bytes] = []

    def _leaves(self, size: int) -> list[bytes]:
        while len(self._hashes) < size:
            with self.store.read() as tx:
                page = tx.list_tree_leaves(start=len(self._hashes), limit=_PAGE)
            if not page:
                break
            for leaf in page:
                if leaf.leaf_index == len(self._hashes):
                    self._hashes.append(leaf.leaf_hash)
        return self._hashes[:size]

    def run_once(self) -> int:
        """Submits the latest head to every witness behind it; returns how many cosignatures were kept."""
        with self.store.read() as tx:
            latest = tx.latest_tree_head()
            behind = [(w, tx.latest_cosignature(w.name)) for w in self.witnesses]
        if latest is None:
            return 0
        kept = 0
        for witness, last in behind:
            if last is not None and last.tree_size >= latest.tree_size:
                continue
            try:
                kept += self._submit(witness, latest, 0 if last is None else last.tree_size)
            except (httpx.HTTPError, ProtocolError, ValueError) as exc:
                log.warning("witness %s did not cosign the head of %d leaves: %s", witness.name, latest.tree_size, exc)
        return kept

    def _submit(self, witness: WitnessEndpoint, head: SignedTreeHead, old: int, *, retry: bool = True) -> int:
        hashes = self._leaves(head.tree_size)
        if len(hashes) < head.tree_size or old > head.tree_size:
            raise ValueError(f"cannot prove from {old} to {head.tree_size} leaves with {len(hashes)} stored")
        note = checkpoint_note(self.origin, head.tree_size, head.root_hash, head.timestamp_ns, head.key_id,
                               head.signature)
        body = add_checkpoint_request(old, consistency_proof(hashes, old, head.tree_size), note)
        reply, answer = bounded_post(self.client, witness.url.rstrip("/") + "/add-checkpoint", content=body,
                                     total_s=self.timeout_s * 2)
        text = answer.decode("utf-8", "replace").strip()
        if reply.status_code == 409 and retry and text.isdigit() and len(text) < 19:
            theirs = int(text)
            log.warning("witness %s last cosigned %d leaves, not %d: proving from there", witness.name, theirs, old)
            return self._submit(witness, head, theirs, retry=False)
        if reply.status_code != 200:
            raise ValueError(f"HTTP {reply.status_code}: {text[:200]}")
        name, hint, timestamp, signature = parse_cosignature_line(answer)
        wid = key_id(witness.public_key)
        c = Cosignature(witness.name, wid, head.tree_size, head.root_hash, timestamp, signature)
        if hint != wid[:4] or not c.ok(witness.public_key, self.origin):
            raise ValueError(f"the cosignature from {name!r} does not verify under the witness's configured key")
        with self.store.transaction() as tx:
            tx.add_cosignature(StoredCosignature(witness.name, wid, head.tree_size, head.root_hash, timestamp,
                                                 signature, time.time_ns()))
        log.info("witness %s cosigned the head of %d leaves", witness.name, head.tree_size)
        return 1


def submitter_for(store: Store, settings: object) -> WitnessSubmitter | None:
    """The submitter for the settings' witnesses, or None when none is configured."""
    from collector.settings import CollectorSettings
    from collector.transparency import load_or_create_tree_key, tree_public_key

    assert isinstance(settings, CollectorSettings)
    if not settings.witnesses:
        return None
    public = tree_public_key(load_or_create_tree_key(settings.data_dir))
    endpoints = [WitnessEndpoint(w.name, w.url, bytes.fromhex(w.public_key)) for w in settings.witnesses]
    return WitnessSubmitter(store, public, endpoints, timeout_s=settings.witness_timeout_seconds)


def witness_keys(settings: object) -> list[WitnessKey]:
    """The witnesses' names and keys, as the bundle carries them."""
    from collector.settings import CollectorSettings

    assert isinstance(settings, CollectorSettings)
    return [w.key() for w in settings.witnesses]
