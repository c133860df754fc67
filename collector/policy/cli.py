"""``shoumi-collector policy set|assign|list|show``: policies from the command line, audited like the UI.

    shoumi-collector policy set NAME --file policy.toml [--comment TEXT] --data-dir DIR
                                                   the next version (version 1 for a new policy); exit 2 with
                                                   KEY: reason if the agent would refuse the document
    shoumi-collector policy assign NAME --label L [--label L ...] [--priority N] --data-dir DIR
                                                   these labels carry the policy (replacing its labels)
    shoumi-collector policy list --data-dir DIR     name, newest version, labels, agents applied / assigned
    shoumi-collector policy show NAME [--version N] --data-dir DIR   the document, as TOML

A running collector on the same store pushes the change within a few seconds (its refresh).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

from collector.policy import service as policies
from collector.policy.document import MAX_DOCUMENT_BYTES
from collector.policy.service import PolicyProblem
from collector.settings import CollectorSettings

__all__ = ["add_policy_parser", "run_policy"]


def add_policy_parser(sub: Any, store_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds the ``policy`` command to the collector's subcommands."""
    policy = sub.add_parser("policy", help="policies pushed to agents by label")
    policy_sub = policy.add_subparsers(dest="action", required=True)
    set_ = policy_sub.add_parser("set", help="save a TOML file as the policy's next version")
    store_args(set_)
    set_.add_argument("name")
    set_.add_argument("--file", required=True, type=Path, help="the [policy] table as TOML (or a whole agent.toml)")
    set_.add_argument("--comment", default="", help="why it changed (kept with the version)")
    assign = policy_sub.add_parser("assign", help="make these labels exactly the ones carrying the policy")
    store_args(assign)
    assign.add_argument("name")
    assign.add_argument("--label", dest="labels", action="append", default=[], help="a label (repeat); * for all")
    assign.add_argument("--priority", type=int, default=0, help="the highest priority wins among matching labels")
    store_args(policy_sub.add_parser("list", help="policies, newest versions, labels, agents reached"))
    show = policy_sub.add_parser("show", help="print a version's document")
    store_args(show)
    show.add_argument("name")
    show.add_argument("--version", type=int, help="a version number (default: the newest)")


def run_policy(settings: CollectorSettings, args: argparse.Namespace, actor: str) -> int:
    """Runs ``policy ACTION``; 0 when done, 2 (with a message) for bad input, nothing written."""
    from collector.storage import open_store

    document = ""
    if args.action == "set":
        try:
            raw = args.file.read_bytes()
            if len(raw) > MAX_DOCUMENT_BYTES:
                raise PolicyProblem(422, f"{args.file} has more than {MAX_DOCUMENT_BYTES} bytes")
            document = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError, PolicyProblem) as exc:
            print(f"shoumi-collector: cannot use {args.file}: {exc}", file=sys.stderr)
            return 2
    store = open_store(settings.store_location())
    try:
        if args.action == "list":
            with store.read() as tx:
                rows = policies.summaries(tx=tx)
            for r in rows:
                print(f"{r.latest.name}\tv{r.latest.version}\t{','.join(r.labels) or '-'}\t"
                      f"{r.applied_latest}/{r.assigned_agents} applied\t{r.refused_latest} refused")
            return 0
        if args.action == "show":
            with store.read() as tx:
                found = tx.get_policy_version(name=args.name, version=args.version)
            if found is None:
                print(f"shoumi-collector: no policy {args.name!r}"
                      + (f" version {args.version}" if args.version else ""), file=sys.stderr)
                return 2
            sys.stdout.write(found.document)
            return 0
        with store.transaction() as tx:
            if args.action == "set":
                made, new = policies.save_version(tx=tx, name=args.name, document=document, author=actor,
                                                  comment=args.comment, now_ns=time.time_ns())
                print(f"{made.name} v{made.version} {made.sha256}" + ("" if new else " (unchanged)"))
            else:
                done = policies.assign(tx=tx, name=args.name, labels=args.labels, priority=args.priority,
                                       actor=actor, now_ns=time.time_ns())
                print(f"{args.name}: {', '.join(a.label for a in done) or 'no labels'} (priority {args.priority})")
        return 0
    except PolicyProblem as exc:
        print(f"shoumi-collector: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
