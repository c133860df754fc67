"""The lifecycle table and four-eyes as values."""

from __future__ import annotations

from collector.cases.models import (TRANSITIONS, CaseState, HistoryEntry, Need, Side, four_eyes_violation, step_for,
                                    steps_from)

S = CaseState


def test_the_table_is_the_documented_lifecycle() -> None:
    assert set(TRANSITIONS) == {
        (S.OPEN, S.UNDER_REVIEW), (S.OPEN, S.DISMISSED), (S.UNDER_REVIEW, S.SECURITY_CONFIRMED),
        (S.UNDER_REVIEW, S.DISMISSED), (S.SECURITY_CONFIRMED, S.HR_CONFIRMED), (S.SECURITY_CONFIRMED, S.UNDER_REVIEW),
        (S.SECURITY_CONFIRMED, S.DISMISSED), (S.HR_CONFIRMED, S.SENT_TO_PAYROLL), (S.HR_CONFIRMED, S.APPEALED),
        (S.APPEALED, S.HR_CONFIRMED), (S.APPEALED, S.DISMISSED), (S.SENT_TO_PAYROLL, S.CLOSED),
        (S.DISMISSED, S.CLOSED)}
    assert steps_from("closed") == ()  # closed is the end
    security = {t for t, s in TRANSITIONS.items() if s.permission == "cases:write"}
    assert security == {(S.OPEN, S.UNDER_REVIEW), (S.OPEN, S.DISMISSED), (S.UNDER_REVIEW, S.SECURITY_CONFIRMED),
                        (S.UNDER_REVIEW, S.DISMISSED), (S.DISMISSED, S.CLOSED)}
    assert all(s.permission == "cases:hr" for t, s in TRANSITIONS.items() if t not in security)
    assert Need.HR_RECORDS in TRANSITIONS[(S.SECURITY_CONFIRMED, S.HR_CONFIRMED)].needs
    assert all(Need.REASON in s.needs for (_, to), s in TRANSITIONS.items() if to is S.DISMISSED and
               s.source is not S.APPEALED)
    assert TRANSITIONS[(S.UNDER_REVIEW, S.SECURITY_CONFIRMED)].confirms is Side.SECURITY
    assert step_for("open", "sent_to_payroll") is None and step_for("open", "bogus") is None


def _moved(actor: str, frm: str, to: str) -> HistoryEntry:
    return HistoryEntry(1, 0, actor, "transition", frm, to)


def test_four_eyes_reads_people_from_the_history() -> None:
    history = [HistoryEntry(1, 0, "ana", "open", None, "open"), _moved("ana", "open", "under_review"),
               _moved("Ana", "under_review", "security_confirmed")]
    hr_step = TRANSITIONS[(S.SECURITY_CONFIRMED, S.HR_CONFIRMED)]
    assert "four-eyes" in (four_eyes_violation(hr_step, "ana", history) or "")  # case-insensitive
    assert four_eyes_violation(hr_step, "hana", history) is None
    send = TRANSITIONS[(S.HR_CONFIRMED, S.SENT_TO_PAYROLL)]
    assert four_eyes_violation(send, "ANA", history) is not None
    after_hr = [*history, _moved("hana", "security_confirmed", "hr_confirmed")]
    sec_step = TRANSITIONS[(S.UNDER_REVIEW, S.SECURITY_CONFIRMED)]
    assert four_eyes_violation(sec_step, "hana", after_hr) is not None
    assert four_eyes_violation(sec_step, "sam", after_hr) is None
