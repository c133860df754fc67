"""Changing bundles the way a hostile party could: bytes flipped, members edited and re-sealed with the
collector's key (what an operator who holds that key can do), zips written by hand."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from typing import Any, Callable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.evidence.bundle import manifest_bytes, zip_bytes
from shoumi_verify.check import Failed, Trust, verify_bundle
from shoumi_verify.formats import MANIFEST_DOMAIN

Members = dict[str, bytes]


def flip(data: bytes, at: int | None = None) -> bytes:
    i = len(data) // 2 if at is None else at
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


def reseal(members: Mapping[str, bytes], key: Ed25519PrivateKey) -> Members:
    """The members with a fresh manifest signed by ``key``: an operator who holds the collector's key."""
    body = {p: v for p, v in members.items() if p not in ("manifest.json", "manifest.sig")}
    old = json.loads(members["manifest.json"])
    manifest = manifest_bytes(body, case_id=old["case_id"], tree_public_key=key.public_key().public_bytes_raw(),
                              now_ns=old["exported_at_ns"])
    return {**body, "manifest.json": manifest, "manifest.sig": (key.sign(MANIFEST_DOMAIN + manifest).hex() + "\n").encode()}


def edit_json(members: Mapping[str, bytes], path: str, change: Callable[[Any], Any]) -> Members:
    doc = json.loads(members[path])
    changed = change(doc)
    out = dict(members)
    out[path] = json.dumps(doc if changed is None else changed, ensure_ascii=False, sort_keys=True, indent=1).encode()
    return out


def failure(members: Mapping[str, bytes], trust: Trust = Trust()) -> Failed | None:
    """The first failure the verifier names, or None if everything holds."""
    try:
        verify_bundle(members, trust, lang="en")
    except Failed as exc:
        return exc
    return None


def raw_zip(entries: list[tuple[str, bytes]], *, compress: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip with exactly these entries, duplicates and odd names included."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name: that is the point
        with zipfile.ZipFile(buffer, "w", compression=compress) as z:
            for name, data in entries:
                z.writestr(zipfile.ZipInfo(name), data, compress_type=compress)
    return buffer.getvalue()


__all__ = ["flip", "reseal", "edit_json", "failure", "raw_zip", "zip_bytes"]
