"""``shoumi-collector case export CASE_ID --out BUNDLE.zip``: a case's evidence bundle, audited.

    shoumi-collector case export CASE_ID --out BUNDLE.zip --data-dir DIR [--database-url URL]
                                 [--prove-from SIZE ...]

Signs a tree head first if batches were stored since the last one (and gives it to the configured
witnesses), so the case's newest batches are provable. The zip is written to a temporary file next
to ``--out`` and renamed into place: a failed export leaves nothing behind. Prints the bundle's
SHA-256. Exit 2 with a message for a case that does not exist or cannot be exported yet.

    shoumi-collector tree-head --data-dir DIR [--size N]
    shoumi-collector tree-head --data-dir DIR --public-key     (the key witnesses and auditors pin, hex)

prints a signed tree head (the latest, or that of N leaves) as JSON: what an auditor keeps apart and
later gives ``shoumi-verify --tree-head FILE``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

from shoumi_verify.files import write_durably

from collector.settings import CollectorSettings

__all__ = ["add_case_parser", "run_case", "run_tree_head"]


def add_case_parser(sub: Any, store_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds the ``case`` command to the collector's subcommands."""
    case = sub.add_parser("case", help="cases: export a case's evidence bundle")
    case_sub = case.add_subparsers(dest="action", required=True)
    export = case_sub.add_parser("export", help="write the case's evidence bundle (zip), checkable by shoumi-verify")
    store_args(export)
    export.add_argument("case_id", type=int)
    export.add_argument("--out", type=Path, required=True, help="the bundle to write (BUNDLE.zip)")
    export.add_argument("--prove-from", type=int, action="append", default=[],
                        help="also prove consistency from the signed head of this many leaves (one an auditor kept)")
    head = sub.add_parser("tree-head", help="print a signed tree head as JSON (for shoumi-verify --tree-head)")
    store_args(head)
    head.add_argument("--size", type=int, help="the head of this many leaves (default: the latest)")
    head.add_argument("--public-key", action="store_true",
                      help="print the tree-head public key (hex) instead: what witnesses (--log-key) and auditors pin")


def run_tree_head(settings: CollectorSettings, args: argparse.Namespace) -> int:
    """Runs ``tree-head``: the head as JSON on stdout, what an auditor keeps and later gives shoumi-verify."""
    import json

    from collector.evidence.bundle import head_json
    from collector.storage import open_store

    if args.public_key:
        from collector.transparency import TransparencyError, load_tree_key, tree_public_key

        try:
            print(tree_public_key(load_tree_key(settings.data_dir)).hex())
        except TransparencyError as exc:
            print(f"shoumi-collector: {exc}", file=sys.stderr)
            return 2
        return 0
    store = open_store(settings.store_location())
    try:
        with store.read() as tx:
            head = tx.latest_tree_head() if args.size is None else tx.tree_head_at(args.size)
    finally:
        store.close()
    if head is None:
        print("shoumi-collector: no signed tree head" + (f" of {args.size} leaves" if args.size is not None else ""),
              file=sys.stderr)
        return 2
    print(json.dumps(head_json(head)))
    return 0


def run_case(settings: CollectorSettings, args: argparse.Namespace, actor: str) -> int:
    """Runs ``case export``."""
    from collector.evidence.bundle import EvidenceError
    from collector.evidence.service import EvidenceKeys, export_case
    from collector.evidence.witnesses import submitter_for
    from collector.storage import open_store
    from collector.transparency import TreeHeadSigner

    if not args.out.parent.is_dir():
        print(f"shoumi-collector: {args.out.parent} is not a folder", file=sys.stderr)
        return 2
    store = open_store(settings.store_location())
    try:
        keys = EvidenceKeys.load(settings.data_dir, [w.key() for w in settings.witnesses])
        TreeHeadSigner(store, keys.tree_key).sign_if_grown()
        witnesses = submitter_for(store, settings)
        if witnesses is not None:
            witnesses.run_once()
        try:
            with store.transaction() as tx:  # the bundle and its audit row: one snapshot, one commit
                made = export_case(tx, args.case_id, keys=keys, actor=actor, now_ns=time.time_ns(),
                                   prove_from=args.prove_from)
                write_durably(args.out.resolve(), made.zip)  # inside: no audit row for a bundle not written
        except EvidenceError as exc:
            print(f"shoumi-collector: case {args.case_id}: {exc}", file=sys.stderr)
            return 2
    finally:
        store.close()
    print(made.sha256)
    print(f"wrote {args.out} ({len(made.zip)} bytes, {len(made.members)} members)", file=sys.stderr)
    return 0
