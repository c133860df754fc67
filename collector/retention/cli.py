"""``shoumi-collector legal-hold place|release|list``, ``retention run|status`` and ``privacy export``.

    shoumi-collector retention run --data-dir DIR        one run over every kind with a period (as serve does)
    shoumi-collector retention status --data-dir DIR     the periods in force and the last runs
    shoumi-collector privacy export EMPLOYEE --out FILE --reason TEXT --data-dir DIR
                                                         an access request (PIPL §45): zip, or JSON if FILE
                                                         ends in .json; unknown employee: exit 1

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

__all__ = ["add_legal_hold_parser", "run_legal_hold", "add_retention_parsers", "run_retention_cmd", "run_privacy"]

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


def add_retention_parsers(sub: Any, store_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds ``retention run|status`` and ``privacy export`` to the collector's subcommands."""
    ret = sub.add_parser("retention", help="retention per kind of record (docs/privacy.md)")
    ret_sub = ret.add_subparsers(dest="action", required=True)
    store_args(ret_sub.add_parser("run", help="delete what is past its period and not held (audited)"))
    status = ret_sub.add_parser("status", help="the periods in force and the last runs")
    store_args(status)
    status.add_argument("--runs", type=int, default=20, help="how many of the last runs to list")
    priv = sub.add_parser("privacy", help="access requests (PIPL §45)")
    priv_sub = priv.add_subparsers(dest="action", required=True)
    export = priv_sub.add_parser("export", help="export what the collector holds about one employee (audited)")
    store_args(export)
    export.add_argument("employee", help="a pseudonym (P-...), the user name events carry, or a payroll id")
    export.add_argument("--out", required=True, help="the file to write: .zip (default) or .json")
    export.add_argument("--reason", required=True, help="why (10-500 characters): the request it answers")


def _runs_text(runs: Any) -> list[str]:
    from collector.web.timefmt import format_ns

    lines = []
    for r in runs:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(r.held_why.items())) or "-"
        lines.append(f"#{r.id}\t{format_ns(r.at_ns)}\t{r.kind}\tbefore {format_ns(r.before_ns)}\tdeleted "
                     f"{r.records}{f' ({r.events} events)' if r.kind == 'events' else ''}\theld {r.held}\t{why}")
    return lines


def run_retention_cmd(settings: Any, args: argparse.Namespace, actor: str) -> int:
    """Runs ``retention run`` or ``retention status``; returns the exit code."""
    from collector.retention.models import KINDS
    from collector.retention.service import run_retention
    from collector.storage import open_store

    policy = settings.retention_policy()
    store = open_store(settings.store_location())
    try:
        if args.action == "run":
            runs = run_retention(store=store, policy=policy, now_ns=time.time_ns(), actor=actor)
            for line in _runs_text(r for r in runs if r.records or r.held):
                print(line)
            return 0
        for kind in KINDS:
            days = policy.days(kind)
            print(f"{kind}\t{'kept' if days is None else f'{days:g} days'}")
        print(f"payroll\t{policy.payroll_days:g} days (minimum 730)")
        with store.read() as tx:
            runs = list(tx.list_retention_runs())
        for line in _runs_text(runs[-max(1, args.runs):]):
            print(line)
        return 0
    finally:
        store.close()


def run_privacy(settings: Any, args: argparse.Namespace, actor: str) -> int:
    """Runs ``privacy export``; 1 for an unknown employee, 2 for bad input; nothing written then."""
    from pathlib import Path

    from collector.privacy.access import export_person, write_export
    from collector.privacy.service import PrivacyError
    from collector.storage import open_store

    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"shoumi-collector: {out.parent} is not a folder", file=sys.stderr)
        return 2
    store = open_store(settings.store_location())
    try:
        try:
            with store.transaction() as tx:
                data = export_person(tx=tx, who=args.employee, reason=args.reason, actor=actor,
                                     now_ns=time.time_ns())
        except PrivacyError as exc:
            print(f"shoumi-collector: {exc}", file=sys.stderr)
            return 1 if exc.status == 404 else 2
        write_export(data, out)
        c = data["counts"]
        print(f"wrote {out}: {data['person']['pseudonym']}: {c['events']} events, {c['alerts']} alerts, "
              f"{c['cases']} cases, {c['agreements']} agreement records, {c['audit']} audit entries", file=sys.stderr)
        return 0
    finally:
        store.close()
