"""The CLI's ledger commands: intake, wages, pause/resume, end of employment, notices, exports, serve.

Each command opens the ledger named by --ledger (or SHOUMI_PAYROLL_LEDGER_PATH), calls one ledger
or service function, prints JSON, and closes. Human actions carry --actor (default: the OS user).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from payroll_bridge.errors import InvalidInput
from payroll_bridge.ledger import Ledger
from payroll_bridge.minimum_wage import load_table
from payroll_bridge.period import Period
from payroll_bridge.rules import claim_deadline
from payroll_bridge.settings import PayrollSettings

__all__ = ["register"]


def _emit(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


def _ledger(settings: PayrollSettings) -> Ledger:
    return Ledger(settings.resolved_ledger_path(), table=load_table(settings.minimum_wage_table),
                  appeal_days=settings.appeal_days)


def _read(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def _period(text: str) -> Period:
    try:
        return Period.parse(text)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"expected an ISO date YYYY-MM-DD, got {text!r}") from exc


def _read_bounded(path: str, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` + 1 bytes of the file (or stdin), and whether there was more."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    return data[:limit], len(data) > limit


def _intake(args: argparse.Namespace, settings: PayrollSettings) -> int:
    from payroll_bridge.intake import MAX_CASE_BYTES

    payload, too_large = _read_bounded(args.case, MAX_CASE_BYTES)
    with _ledger(settings) as ledger:
        if too_large:
            reason = f"the case file is larger than {MAX_CASE_BYTES} bytes: refused unread"
            ledger.record_malformed_intake(payload=payload[:4096], reason=reason, actor=args.actor)
            raise InvalidInput(reason)
        outcome = ledger.intake(payload=payload, actor=args.actor)
    _emit(outcome.to_json())
    return 0 if outcome.decision.accepted else 1


def _wages(args: argparse.Namespace, settings: PayrollSettings) -> int:
    from payroll_bridge.services import parse_wages

    employee_id, wages = parse_wages(_read(args.wages))
    with _ledger(settings) as ledger:
        result = ledger.record_wages(employee_id=employee_id, wages=wages, actor=args.actor)
        doc = result.to_json()
        doc["lines"] = [x.to_json() for x in ledger.lines(employee_id=employee_id)]
        doc["remaining_fen"] = ledger.remaining_fen(employee_id=employee_id)
    _emit(doc)
    return 0


def _lines(args: argparse.Namespace, settings: PayrollSettings) -> int:
    with _ledger(settings) as ledger:
        lines = ledger.lines(employee_id=args.employee, case_id=args.case,
                             period=_period(args.period) if args.period else None)
        _emit({"lines": [x.to_json() for x in lines], "violations": ledger.violations(employee_id=args.employee),
               "refunds": [r.to_json() for r in ledger.refunds(employee_id=args.employee, case_id=args.case)]})
    return 0


def _pause(args: argparse.Namespace, settings: PayrollSettings) -> int:
    with _ledger(settings) as ledger:
        _emit(ledger.pause(case_id=args.case, reason=args.reason, actor=args.actor).to_json())
    return 0


def _resume(args: argparse.Namespace, settings: PayrollSettings) -> int:
    with _ledger(settings) as ledger:
        _emit(ledger.resume(case_id=args.case, award_fen=args.award_fen, award_ref=args.award_ref,
                            actor=args.actor).to_json())
    return 0


def _end(args: argparse.Namespace, settings: PayrollSettings) -> int:
    with _ledger(settings) as ledger:
        result = ledger.end_employment(employee_id=args.employee, last_period=_period(args.last_period),
                                       actor=args.actor)
        doc = result.to_json()
        remaining = ledger.remaining_fen(employee_id=args.employee)
        doc["remaining_fen"] = remaining
        # The balance left is never taken from final pay: it is a claim, with the employer's deadline.
        deadline = claim_deadline(_period(args.last_period)).isoformat()
        doc["claim_deadlines"] = {c: deadline for c, left in remaining.items() if left > 0}
    _emit(doc)
    return 0


def _notice(args: argparse.Namespace, settings: PayrollSettings) -> int:
    from payroll_bridge.services import issue_notice

    issued = _day(args.date) if args.date else date.today()
    with _ledger(settings) as ledger:
        _emit(issue_notice(ledger, case_id=args.case, settings=settings, out_dir=Path(args.out),
                           issued_on=issued, actor=args.actor))
    return 0


def _object(args: argparse.Namespace, settings: PayrollSettings) -> int:
    with _ledger(settings) as ledger:
        _emit(ledger.object_to_notice(case_id=args.case, notice_id=args.notice_id, received_on=_day(args.received_on),
                                      reason=args.reason, actor=args.actor).to_json())
    return 0


def _answer(args: argparse.Namespace, settings: PayrollSettings) -> int:
    with _ledger(settings) as ledger:
        _emit(ledger.answer_objection(case_id=args.case, response=args.response, upheld=args.upheld,
                                      actor=args.actor).to_json())
    return 0


def _served(args: argparse.Namespace, settings: PayrollSettings) -> int:
    with _ledger(settings) as ledger:
        ledger.notice_served(case_id=args.case, notice_id=args.notice_id, served_on=_day(args.served_on),
                             actor=args.actor)
    _emit({"case_id": args.case, "notice_id": args.notice_id, "served_on": args.served_on})
    return 0


def _export(args: argparse.Namespace, settings: PayrollSettings) -> int:
    from payroll_bridge.services import push_export, write_export

    with _ledger(settings) as ledger:
        batch = ledger.export(period=_period(args.period), actor=args.actor)
        doc: dict[str, Any] = batch.to_json()
        doc["files"] = write_export(ledger, batch=batch, settings=settings,
                                    csv_path=Path(args.csv) if args.csv else None,
                                    frappe_path=Path(args.frappe) if args.frappe else None, actor=args.actor)
        if args.push and batch.export_id:
            result = push_export(ledger, export_id=batch.export_id, settings=settings, actor=args.actor)
            doc["pushed"] = result.accepted
    _emit(doc)
    return 0


def _render(args: argparse.Namespace, settings: PayrollSettings) -> int:
    from payroll_bridge.services import write_export

    with _ledger(settings) as ledger:
        batch = ledger.export_batch(args.export_id)
        doc: dict[str, Any] = batch.to_json()
        doc["files"] = write_export(ledger, batch=batch, settings=settings,
                                    csv_path=Path(args.csv) if args.csv else None,
                                    frappe_path=Path(args.frappe) if args.frappe else None, actor=args.actor)
    _emit(doc)
    return 0


def _push(args: argparse.Namespace, settings: PayrollSettings) -> int:
    from payroll_bridge.services import push_export

    with _ledger(settings) as ledger:
        result = push_export(ledger, export_id=args.export_id, settings=settings, actor=args.actor)
    _emit({"export_id": args.export_id, "pushed": result.accepted})
    return 0


def _audit(args: argparse.Namespace, settings: PayrollSettings) -> int:
    with _ledger(settings) as ledger:
        _emit({
            "audit": [{"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "subject": e.subject,
                       "detail": e.detail} for e in ledger.audit_log()],
            "intakes": ledger.intakes(),
        })
    return 0


def _client(args: argparse.Namespace, settings: PayrollSettings) -> int:
    with _ledger(settings) as ledger:
        if args.action == "list":
            _emit({"clients": ledger.clients()})
            return 0
        if not args.name:
            raise InvalidInput(f"client {args.action} needs the client's NAME")
        if args.action == "create":
            token = ledger.create_client(name=args.name, actor=args.actor)
            _emit({"name": args.name, "actor": f"client:{args.name}", "token": token,
                   "note": "shown once: give it to the client as its bearer token; only its hash is kept"})
        else:
            ledger.revoke_client(name=args.name, actor=args.actor)
            _emit({"name": args.name, "revoked": True})
    return 0


def _serve(args: argparse.Namespace, settings: PayrollSettings) -> int:
    import uvicorn

    from payroll_bridge.api import create_app

    listen = args.listen or settings.http_listen
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInput(f"--listen expects HOST:PORT, got {listen!r}")
    if settings.intake_token is not None:
        raise InvalidInput("SHOUMI_PAYROLL_INTAKE_TOKEN is no longer used: one shared token cannot say who acted. "
                           "Give each client its own credential (`shoumi-payroll client create NAME`) and unset it")
    with _ledger(settings) as ledger:
        if not ledger.clients():
            raise InvalidInput("refusing to serve the HTTP intake without any client credential: create one with "
                               "`shoumi-payroll client create NAME` (e.g. collector) and give the client its token")
    host = host.strip("[]")
    if host not in ("127.0.0.1", "::1", "localhost"):
        sys.stderr.write(f"shoumi-payroll: warning: serving on {host} in plain HTTP: bearer tokens and cases cross "
                         "the network readable; put a TLS proxy in front or listen on loopback\n")
    uvicorn.run(create_app(settings), host=host, port=int(port), log_level="info")
    return 0


def register(sub: Any, *, actor_default: str) -> None:
    """Adds the ledger's subcommands to the parser."""

    def add(name: str, run: Any, help_text: str, *, actor: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        if actor:
            p.add_argument("--actor", default=actor_default, help="who does this (recorded in the audit)")
        p.set_defaults(run=run)
        return p

    p = add("intake", _intake, "check a confirmed case and file it, or refuse it and record why")
    p.add_argument("case", help="CASE.json, or - for stdin")
    p = add("wages", _wages, "record or correct an employee's wages and recompute the schedule")
    p.add_argument("wages", help="WAGES.json: {employee_id, periods: [...]}")
    p = add("lines", _lines, "print stored lines and violations", actor=False)
    p.add_argument("--employee")
    p.add_argument("--case")
    p.add_argument("--period")
    p = add("pause", _pause, "pause a case under appeal or arbitration")
    p.add_argument("case")
    p.add_argument("--reason", required=True)
    p = add("resume", _resume, "resume a paused case with the award's amount (0 dismisses it)")
    p.add_argument("case")
    p.add_argument("--award-fen", type=int, required=True)
    p.add_argument("--award-ref", required=True)
    p = add("end-employment", _end, "record the last month of employment")
    p.add_argument("employee")
    p.add_argument("--last-period", required=True)
    p = add("notice", _notice, "write the employee's notice (text and PDF) and record it")
    p.add_argument("case")
    p.add_argument("--out", required=True, help="directory for the .txt and .pdf")
    p.add_argument("--date", help="issue date (default: today)")
    p = add("notice-served", _served, "record the day a written notice reached the employee")
    p.add_argument("case")
    p.add_argument("--notice-id", required=True)
    p.add_argument("--served-on", required=True)
    p = add("object", _object, "record the employee's written objection to a notice (pauses within the window)")
    p.add_argument("case")
    p.add_argument("--notice-id", required=True)
    p.add_argument("--received-on", required=True)
    p.add_argument("--reason", required=True)
    p = add("answer-objection", _answer, "HR's answer to an objection: rejected (deduct again) or --upheld")
    p.add_argument("case")
    p.add_argument("--response", required=True)
    p.add_argument("--upheld", action="store_true", help="the objection is accepted: the claim is withdrawn")
    p = add("export", _export, "freeze a period's lines and write CSV / Frappe files, optionally push")
    p.add_argument("--period", required=True)
    p.add_argument("--csv")
    p.add_argument("--frappe")
    p.add_argument("--push", action="store_true", help="push to Frappe (SHOUMI_PAYROLL_FRAPPE__*)")
    p = add("render", _render, "write the files of an existing export again")
    p.add_argument("export_id")
    p.add_argument("--csv")
    p.add_argument("--frappe")
    p = add("push", _push, "push an existing export to Frappe (what it already took is skipped)")
    p.add_argument("export_id")
    add("audit", _audit, "print the audit trail and every intake decision", actor=False)
    p = add("client", _client, "HTTP client credentials: create NAME (prints its token once), list, revoke NAME")
    p.add_argument("action", choices=("create", "list", "revoke"))
    p.add_argument("name", nargs="?")
    p = add("serve", _serve, "serve the HTTP intake (needs at least one client credential)", actor=False)
    p.add_argument("--listen", help="HOST:PORT (default: $SHOUMI_PAYROLL_HTTP_LISTEN)")
