"""The ``shoumi-payroll`` command line: parses arguments, builds the settings, calls a service.

Exit codes: 0 done; 1 refused (an intake refused, a step the ledger does not allow); 2 invalid
input (nothing written); 3 the payroll system did not take a push. Errors go to stderr, results
to stdout as JSON.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, cast

from payroll_bridge.errors import InvalidInput, PayrollError
from payroll_bridge.settings import PayrollSettings

__all__ = ["main"]

PROG = "shoumi-payroll"


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def _emit(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


def _settings(args: argparse.Namespace) -> PayrollSettings:
    overrides: dict[str, Any] = {}
    if getattr(args, "table", None):
        overrides["minimum_wage_table"] = Path(args.table)
    if getattr(args, "ledger", None):
        overrides["ledger_path"] = Path(args.ledger)
    return PayrollSettings(**overrides)


def _cmd_schedule(args: argparse.Namespace, settings: PayrollSettings) -> int:
    from payroll_bridge.contract import decode_json, parse_request, run_schedule
    from payroll_bridge.minimum_wage import load_table

    request = parse_request(decode_json(_read(args.input)))
    output = run_schedule(request, load_table(settings.minimum_wage_table), settings.stale_after_months,
                          force_override=args.force_override)
    warnings = cast(list[dict[str, Any]], output["warnings"])
    forced = [w for w in warnings if w["code"] in _FORCED]
    if forced:
        # A forced override weakens the law for this schedule: it is said on stderr and audited.
        from payroll_bridge.ledger import Ledger

        for w in forced:
            sys.stderr.write(f"{PROG}: warning: {w['code']}: {w['message']}\n")
        with Ledger(settings.resolved_ledger_path(), table=load_table(settings.minimum_wage_table)) as ledger:
            ledger.audit_forced_override(employee_id=request.employee_id, warnings=forced, actor=args.actor)
    _emit(output)
    return 0


_FORCED = ("OVERRIDE_BELOW_CONFIRMED_MINIMUM_WAGE", "OVERRIDE_WEAKENS_CONFIRMED_EXCLUSIONS")


def _cmd_table(args: argparse.Namespace, settings: PayrollSettings) -> int:
    from payroll_bridge.minimum_wage import load_table

    table = load_table(settings.minimum_wage_table)
    rows = [r for r in table.rows if args.region in (None, r.region)]
    _emit({
        "origin": table.origin,
        "regions": {
            code: {
                "name": r.name,
                "excludes_social_insurance": r.excludes_social_insurance,
                "excludes_housing_fund": r.excludes_housing_fund,
                "requires_written_notice": r.requires_written_notice,
                "cap_percent": r.cap_percent,
                "cap_base": r.cap_base.value,
                "flags_source": r.flags_source,
                "flags_checked_on": r.flags_checked_on.isoformat(),
                "flags_confirmed": r.flags_confirmed,
                "direct_loss_only": r.direct_loss_only,
                "disciplinary_shares_limits": r.disciplinary_shares_limits,
                "excluded_items": [i.to_json() for i in r.excluded_items],
            }
            for code, r in sorted(table.regions.items()) if args.region in (None, code)
        },
        "rows": [r.to_json() for r in sorted(rows, key=lambda r: (r.region, r.tier, r.effective_from))],
    })
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Shoumi payroll bridge: lawful wage deductions")
    parser.add_argument("--table", help="customer minimum-wage table laid over the bundled one "
                        "(default: $SHOUMI_PAYROLL_MINIMUM_WAGE_TABLE)")
    parser.add_argument("--ledger", help="ledger SQLite file (default: $SHOUMI_PAYROLL_LEDGER_PATH)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("schedule", help="compute a schedule from INPUT.json (stateless)")
    p.add_argument("input", help="INPUT.json, or - for stdin")
    p.add_argument("--force-override", action="store_true",
                   help="apply an override weaker than the confirmed table (warned, and audited in the ledger)")
    p.add_argument("--actor", default=_default_actor(), help="who forces an override (recorded in the audit)")
    p.set_defaults(run=_cmd_schedule)

    p = sub.add_parser("table", help="print the minimum-wage table in use")
    p.add_argument("--region")
    p.set_defaults(run=_cmd_table)

    from payroll_bridge import cli_ledger

    cli_ledger.register(sub, actor_default=_default_actor())
    return parser


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace, PayrollSettings], int] = args.run
    try:
        return run(args, _settings(args))
    except PayrollError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
