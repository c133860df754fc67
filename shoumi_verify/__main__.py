"""The command line: ``shoumi-verify BUNDLE.zip [--tree-head FILE] [--collector-key HEX|FILE]
[--witness-key FILE ...] [--lang zh|en]``.

Exit 0: everything holds; 1: the first thing that does not, named (a hostile or damaged bundle
included); 2: a usage error (no such file, an unreadable key). Reads the bundle in memory and
writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from shoumi_verify.archive import ArchiveError, read_members
from shoumi_verify.check import Failed, Report, Trust, verify_bundle
from shoumi_verify.texts import text

__all__ = ["main", "render", "load_key"]


def load_key(value: str) -> bytes:
    """A raw 32-byte Ed25519 public key from hex text, or from a file holding hex or a PEM public key."""
    candidate = value.strip()
    path = Path(candidate)
    if len(candidate) != 64 and path.exists():
        raw = path.read_bytes()
        if b"BEGIN PUBLIC KEY" in raw:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            pem = load_pem_public_key(raw)
            if not isinstance(pem, Ed25519PublicKey):
                raise ValueError(f"{path} is not an Ed25519 public key")
            return pem.public_bytes_raw()
        candidate = raw.decode("ascii", "replace").split()[-1] if raw.split() else ""
    key = bytes.fromhex(candidate)
    if len(key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes (64 hex digits)")
    return key


def render(report: Report, lang: str, failure: Failed | None = None) -> str:
    """The report as text: what was checked and how, then the result."""
    title = "守密证据包验证报告" if lang == "zh" else "Shoumi evidence bundle verification"
    lines = [title]
    case_id = report.facts.get("case_id")
    if case_id is not None:
        lines.append(("案件编号：" if lang == "zh" else "Case: ") + str(case_id))
    for code, detail in report.passed:
        lines.append(f"  ✓ {text(code, lang, **detail)}")
    if failure is not None:
        lines.append(f"  ✗ [{failure.code}] {text(failure.code, lang, **failure.detail)}")
        lines.append(text("result.fail", lang, code=failure.code))
    else:
        lines.append(text("result.ok", lang))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the verifier; returns the exit code."""
    parser = argparse.ArgumentParser(prog="shoumi-verify", description="Verify a Shoumi case evidence bundle offline")
    parser.add_argument("bundle", type=Path, help="the bundle (zip) exported by shoumi-collector case export")
    parser.add_argument("--tree-head", type=Path, help="a signed tree head (JSON) obtained apart from the bundle")
    parser.add_argument("--collector-key", help="the collector's tree-head public key (hex, or a file) held apart")
    parser.add_argument("--witness-key", action="append", default=[],
                        help="a witness's public key (hex file or PEM) obtained apart: a valid cosignature is required")
    parser.add_argument("--lang", choices=("zh", "en"), default="zh", help="the report's language (default zh)")
    args = parser.parse_args(argv)
    lang = args.lang
    try:
        if not args.bundle.is_file():
            raise ValueError(f"{args.bundle}: no such file")
        head = json.loads(args.tree_head.read_text()) if args.tree_head else None
        trust = Trust(collector_key=load_key(args.collector_key) if args.collector_key else None, tree_head=head,
                      witness_keys=tuple(load_key(k) for k in args.witness_key))
    except (OSError, ValueError) as exc:
        print(f"shoumi-verify: {exc}", file=sys.stderr)
        return 2
    report = Report()
    try:
        members = read_members(args.bundle)
        report = verify_bundle(members, trust, lang=lang)
    except ArchiveError as exc:
        print(render(report, lang, Failed(exc.code, **exc.detail)))
        return 1
    except Failed as exc:
        partial = getattr(exc, "report", None) or report
        print(render(partial, lang, exc))
        return 1
    print(render(report, lang))
    return 0


if __name__ == "__main__":
    sys.exit(main())
