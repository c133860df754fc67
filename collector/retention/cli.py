"""``shoumi-collector legal-hold place|release|list``: legal holds from the command line, each audited.

    shoumi-collector legal-hold place --data-dir DIR [--user U] [--agent A] [--since RFC3339]
                                      [--until RFC3339] --reason TEXT
    shoumi-collector legal-hold release --data-dir DIR HOLD_ID
    shoumi-collector legal-hold list --data-dir DIR [--all]

A hold names a user, an agent or both; without --since/--until it covers all time on that side.
Bad input exits 2 with a message and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

__all__ = ["add_legal_hold_parser", "run_legal_hold"]

_FOREVER = 2**63 - 1


def add_legal_hold_parser(sub: Any, store_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds the ``legal-hold`` command to the collector's subcommands."""
    hold = sub.add_parser("legal-hold", help="legal holds: keep a user's or agent's events from retention")
    hold_sub = hold.add_subparsers(dest="action", required=True)
    place = hold_sub.add_parser("place", help="place a hold (audited)")
    store_args(place)
    place.add_argument("--user", help="the user whose events are held")
    place.add_argument("--agent", dest="agent_id", help="the agent whose events are held")
    place.add_argument("--since", help="RFC 3339 start of the held time range (default: the beginning)")
    place.add_argument("--until", help="RFC 3339 end of the held time range (default: open)")
    place.add_argument("--reason", required=True, help="the case, request or order the hold is for")
    release = hold_sub.add_parser("release", help="release a hold (audited); its events go at the next run")
    store_args(release)
    release.add_argument("hold_id", type=int)
    listing = hold_sub.add_parser("list", help="active holds (--all: released ones too)")
    store_args(listing)
    listing.add_argument("--all", action="store_true", help="also list released holds")


def run_legal_hold(settings: Any, args: argparse.Namespace, actor: str) -> int:
    """Runs one ``legal-hold`` command; returns the exit code."""
    from collector.retention.models import LegalHold
    from collector.retention.service import place_hold, release_hold
    from collector.storage import open_store
    from collector.web.timefmt import format_ns, parse_rfc3339_ns

    now = time.time_ns()
    if args.action == "place":
        try:
            since = parse_rfc3339_ns(args.since) if args.since else 0
            until = parse_rfc3339_ns(args.until) if args.until else _FOREVER
            if not args.reason.strip():
                raise ValueError("--reason must say what the hold is for")
            if not (args.user or args.agent_id):
                raise ValueError("a hold names --user, --agent or both")
            if until < since:
                raise ValueError("--until is before --since")
        except ValueError as exc:
            print(f"shoumi-collector: {exc}", file=sys.stderr)
            return 2
        hold = LegalHold(args.reason.strip(), actor, now, since, until, args.user or None, args.agent_id or None)
    store = open_store(settings.store_location())
    try:
        if args.action == "place":
            with store.transaction() as tx:
                stored = place_hold(tx=tx, hold=hold)
            print(stored.id)
            return 0
        if args.action == "release":
            with store.transaction() as tx:
                done = release_hold(tx=tx, hold_id=args.hold_id, actor=actor, now_ns=now)
            if not done:
                print(f"shoumi-collector: no active legal hold {args.hold_id}", file=sys.stderr)
                return 2
            print(f"released legal hold {args.hold_id}", file=sys.stderr)
            return 0
        with store.read() as tx:
            holds = tx.list_legal_holds(active_only=not args.all)
        for h in holds:
            state = "active" if h.released_at_ns is None else f"released {format_ns(h.released_at_ns)}"
            end = "-" if h.until_ns >= _FOREVER else format_ns(h.until_ns)
            print(f"{h.id}\tuser={h.user or '*'}\tagent={h.agent_id or '*'}\t{format_ns(h.since_ns)}\t{end}\t"
                  f"{state}\tby {h.created_by}\t{h.reason}")
        return 0
    finally:
        store.close()
