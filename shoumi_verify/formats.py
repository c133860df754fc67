"""The signed formats an evidence bundle and a witness share: pure, no I/O, no collector code.

The collector (collector/evidence, collector/witnesses), the witness (shoumi_verify/witness.py) and
the offline verifier (shoumi_verify/check.py) all build and check these bytes here, so what is signed
and what is checked cannot drift apart.

Theory of operation
-------------------
* A **tree head** is the collector's statement "the first ``tree_size`` leaves have root
  ``root_hash``", signed with Ed25519 over ``TREE_HEAD_DOMAIN`` ‖ size (u64 BE) ‖ time (u64 BE) ‖ root
  (the same bytes as collector/domain/evidence.py signs).
* The **manifest** of a bundle is signed over ``MANIFEST_DOMAIN`` ‖ the manifest's exact bytes, with
  the same key as the tree heads (the domain strings keep one from passing as the other).
* A **checkpoint** (in the style of C2SP tlog-checkpoint) is the text a witness sees:
  ``<origin>\\n<size>\\n<base64 root>\\n``. The origin names the log by its key:
  ``shoumi/<first 16 hex digits of SHA-256(public key)>``.
* A **cosignature** (in the style of C2SP tlog-cosignature) is a witness's Ed25519 signature over
  ``"cosignature/v1\\ntime <unix seconds>\\n" ‖ checkpoint``: the witness says it saw this head at that
  time and that it is consistent with every head it cosigned before.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "TREE_HEAD_DOMAIN", "MANIFEST_DOMAIN", "BUNDLE_FORMAT", "COSIGNATURE_PREFIX",
    "tree_head_bytes", "key_id", "ed25519_ok", "origin_of", "checkpoint_body", "cosignature_message",
    "Cosignature", "batch_leaf_hash", "ProtocolError", "checkpoint_note", "add_checkpoint_request",
    "AddCheckpoint", "parse_add_checkpoint", "cosignature_line", "parse_cosignature_line",
]

TREE_HEAD_DOMAIN = b"shoumi.v1.TreeHead\n"
MANIFEST_DOMAIN = b"shoumi.v1.EvidenceManifest\n"
BUNDLE_FORMAT = "shoumi.evidence-bundle/1"
COSIGNATURE_PREFIX = b"cosignature/v1\n"


def tree_head_bytes(tree_size: int, root_hash: bytes, timestamp_ns: int) -> bytes:
    """The bytes a tree head's signature is over."""
    if tree_size < 0 or timestamp_ns < 0 or len(root_hash) != 32:
        raise ValueError("a tree head has a size >= 0, a time >= 0 and a 32-byte root")
    return TREE_HEAD_DOMAIN + struct.pack(">QQ", tree_size, timestamp_ns) + root_hash


def key_id(public_key: bytes) -> bytes:
    """SHA-256 of a raw Ed25519 public key: what names the key."""
    return hashlib.sha256(public_key).digest()


def ed25519_ok(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Tells whether ``signature`` over ``message`` verifies under the raw 32-byte key; never raises."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def origin_of(collector_public_key: bytes) -> str:
    """The log's name in checkpoints: derived from the collector's tree-head key."""
    return f"shoumi/{key_id(collector_public_key).hex()[:16]}"


def checkpoint_body(origin: str, tree_size: int, root_hash: bytes) -> bytes:
    """The checkpoint text a witness cosigns."""
    if "\n" in origin or not origin:
        raise ValueError("an origin is one non-empty line")
    return f"{origin}\n{tree_size}\n{base64.b64encode(root_hash).decode()}\n".encode()


def cosignature_message(body: bytes, timestamp: int) -> bytes:
    """What a witness signs for a checkpoint at ``timestamp`` (unix seconds)."""
    return COSIGNATURE_PREFIX + f"time {timestamp}\n".encode() + body


@dataclass(frozen=True)
class Cosignature:
    """A witness's cosignature on one tree head."""

    witness: str          # the witness's name (its note key name)
    witness_key_id: bytes  # SHA-256 of its raw public key
    tree_size: int
    root_hash: bytes
    timestamp: int        # unix seconds, when the witness cosigned
    signature: bytes

    def ok(self, public_key: bytes, origin: str) -> bool:
        """Tells whether this cosignature verifies under the witness's raw key for the log ``origin``."""
        if key_id(public_key) != self.witness_key_id:
            return False
        body = checkpoint_body(origin, self.tree_size, self.root_hash)
        return ed25519_ok(public_key, self.signature, cosignature_message(body, self.timestamp))


def batch_leaf_hash(canonical: bytes, signature: bytes) -> bytes:
    """The Merkle leaf hash of a stored batch: SHA-256(0x00 ‖ canonical bytes ‖ signature)."""
    return hashlib.sha256(b"\x00" + canonical + signature).digest()


# ---- the witness protocol (in the style of C2SP tlog-witness: POST /add-checkpoint) -------------

_DASH = "\u2014"


class ProtocolError(ValueError):
    """A request or answer of the witness protocol that is not well formed."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise ProtocolError("not base64") from exc


def checkpoint_note(origin: str, tree_size: int, root_hash: bytes, timestamp_ns: int, collector_key_id: bytes,
                    signature: bytes) -> bytes:
    """A checkpoint with the collector's signature line: key hint (4 bytes) ‖ head time (u64 BE) ‖ signature.

    The signature is the collector's signed tree head (``tree_head_bytes``), so the note carries the
    head's time, which the plain checkpoint text does not.
    """
    line = _b64(collector_key_id[:4] + struct.pack(">Q", timestamp_ns) + signature)
    return checkpoint_body(origin, tree_size, root_hash) + f"\n{_DASH} {origin} {line}\n".encode()


def add_checkpoint_request(old_size: int, proof: list[bytes], note: bytes) -> bytes:
    """The body of POST /add-checkpoint: ``old N``, the consistency proof (one base64 hash a line), a blank line, the note."""
    return f"old {old_size}\n".encode() + "".join(f"{_b64(p)}\n" for p in proof).encode() + b"\n" + note


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed POST /add-checkpoint request."""

    old_size: int
    proof: tuple[bytes, ...]
    origin: str
    tree_size: int
    root_hash: bytes
    timestamp_ns: int
    key_hint: bytes
    signature: bytes

    @property
    def body(self) -> bytes:
        return checkpoint_body(self.origin, self.tree_size, self.root_hash)


def parse_add_checkpoint(data: bytes) -> AddCheckpoint:
    """Parses a POST /add-checkpoint body; raises ProtocolError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("not UTF-8") from exc
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ProtocolError("no blank line after the proof")
    lines = head.split("\n")
    if not lines[0].startswith("old ") or not lines[0][4:].isdigit():
        raise ProtocolError("the first line is not 'old <size>'")
    proof = tuple(_unb64(x) for x in lines[1:])
    if any(len(p) != 32 for p in proof) or len(proof) > 64:
        raise ProtocolError("a proof hash is not 32 bytes")
    body, sep, sigs = note.partition("\n\n")
    parts = body.split("\n")
    if not sep or len(parts) < 3 or not parts[1].isdigit():
        raise ProtocolError("the checkpoint is not origin, size, root")
    origin, size, root = parts[0], int(parts[1]), _unb64(parts[2])
    if len(root) != 32:
        raise ProtocolError("the root hash is not 32 bytes")
    for line in sigs.split("\n"):
        words = line.split(" ")
        if len(words) == 3 and words[0] == _DASH and words[1] == origin:
            raw = _unb64(words[2])
            if len(raw) == 4 + 8 + 64:
                return AddCheckpoint(int(lines[0][4:]), proof, origin, size, root,
                                     struct.unpack(">Q", raw[4:12])[0], raw[:4], raw[12:])
    raise ProtocolError("no signature line of the log's origin")


def cosignature_line(witness: str, witness_key_id: bytes, timestamp: int, signature: bytes) -> bytes:
    """A witness's answer: ``— <name> base64(key hint ‖ time (u64 BE) ‖ signature)``."""
    return f"{_DASH} {witness} {_b64(witness_key_id[:4] + struct.pack('>Q', timestamp) + signature)}\n".encode()


def parse_cosignature_line(data: bytes) -> tuple[str, bytes, int, bytes]:
    """(witness name, key hint, time, signature) of a witness's answer; raises ProtocolError."""
    words = data.decode("utf-8", "replace").strip().split(" ")
    if len(words) != 3 or words[0] != _DASH:
        raise ProtocolError("not a cosignature line")
    raw = _unb64(words[2])
    if len(raw) != 4 + 8 + 64:
        raise ProtocolError("a cosignature is key hint, time and a 64-byte signature")
    return words[1], raw[:4], struct.unpack(">Q", raw[4:12])[0], raw[12:]
