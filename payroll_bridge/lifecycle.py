"""The states of a case and of a ledger line, as data.

Theory of operation: a case enters the ledger ``active`` when the intake accepts it. An appeal or
arbitration ``pause``s it: its future lines become PAUSED and deduct nothing. The award ends the
pause: ``resume`` puts the case back to ``active`` with the award's amount replacing HR's figure,
or, when the award is nothing, ``dismiss`` closes it (anything already deducted is refunded). A
written objection to a notice within its appeal window ``object``s: the case deducts nothing until
HR ``answer``s it (rejected: active again) or ``uphold``s it (the claim is withdrawn and refunded),
or the employee goes to arbitration (``pause``).
A line is ``scheduled`` (recomputed whenever wages, cases or employment change) until its period
is exported; ``export`` freezes it for good, so exporting twice never deducts twice. Nothing else
moves: a step not in these tables is refused.
"""

from __future__ import annotations

from typing import Mapping

from payroll_bridge.errors import TransitionRefused

__all__ = ["CASE_TRANSITIONS", "LINE_TRANSITIONS", "next_case_state", "next_line_state"]

CASE_TRANSITIONS: Mapping[tuple[str, str], str] = {
    ("active", "pause"): "paused",
    ("paused", "resume"): "active",
    ("paused", "dismiss"): "dismissed",
    ("active", "object"): "objected",  # the employee's written objection, within the appeal window
    ("objected", "answer"): "active",  # HR reviewed and rejected it
    ("objected", "uphold"): "dismissed",  # HR accepted it: the claim is withdrawn, what was taken refunded
    ("objected", "pause"): "paused",  # the employee went on to arbitration
}

LINE_TRANSITIONS: Mapping[tuple[str, str], str] = {
    ("scheduled", "export"): "exported",
}


def next_case_state(state: str, action: str, *, case_id: str) -> str:
    """The state after ``action``, or TransitionRefused naming what is allowed."""
    try:
        return CASE_TRANSITIONS[(state, action)]
    except KeyError:
        allowed = sorted(a for (s, a) in CASE_TRANSITIONS if s == state) or ["nothing"]
        raise TransitionRefused(
            f"case {case_id} is {state}: cannot {action} (allowed: {', '.join(allowed)})"
        ) from None


def next_line_state(state: str, action: str) -> str:
    """The line's state after ``action``."""
    try:
        return LINE_TRANSITIONS[(state, action)]
    except KeyError:
        raise TransitionRefused(f"a {state} line cannot {action}") from None
