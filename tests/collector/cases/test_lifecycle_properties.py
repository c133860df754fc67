"""Property: whatever people, roles and steps are tried, in any order, a case reaches sent_to_payroll only
through every earlier state, each step taken by a role that holds its permission, and with two different
people confirming for security and for HR, even when an account's role changes between steps."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from hypothesis import HealthCheck, event, given, settings, strategies as st, target

from collector.alerts.service import raise_alert
from collector.cases import service
from collector.cases.models import TRANSITIONS, CaseState, Side, confirmations_of, step_for, steps_from
from collector.domain.roles import allowed
from collector.events.models import StoredBatch, StoredEvent
from collector.storage.memory import MemoryStore

DAY = 86_400 * 10**9
T0 = 1_790_000_000 * 10**9  # the incident's first event
# the same name under different roles: an account whose role changed between steps
ACTORS = [("ana", "security_analyst"), ("ana", "hr"), ("sam", "security_analyst"), ("hana", "hr"),
          ("hana", "security_analyst"), ("hugo", "hr"), ("aud", "auditor"), ("ivan", "it_admin")]
STATES = [s.value for s in CaseState]
ORDER = ["open", "under_review", "security_confirmed", "hr_confirmed", "sent_to_payroll"]


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat()


def _world() -> tuple[MemoryStore, int]:
    store = MemoryStore()
    with store.transaction() as tx:
        ev = StoredEvent(agent_id="agt", epoch=1, seq=1, id="e1", kind="file.read", time_ns=T0, user="alice",
                         attributes={})
        tx.store_batch(StoredBatch("agt", 1, 1, 1, b"h" * 32, bytes(32), b"s" * 64, b"c", T0), [ev],
                       expected_head=None)
        alert = raise_alert(tx=tx, rule="read_burst", severity="high", summary="s", now_ns=T0, agent_id="agt",
                            user="alice", event_ids=["e1"])
        case = service.open_case(tx=tx, alert_ids=[int(alert.id or 0)], title="t", actor="ana", now_ns=T0 + DAY)
    return store, int(case.id or 0)


def _hr_records(tx: Any, case_id: int, actor: str, role: str, now: int, served_ns: int = T0 + 2 * DAY) -> None:
    att = service.attach(tx=tx, case_id=case_id, filename="r.pdf", content=b"report", content_type="a/b",
                         actor=actor, now_ns=now, max_bytes=1000)
    for kind, data in (
        ("loss", {"amount_yuan": "5000", "documents": [att.id]}),
        ("agreement", {"version": "v3", "document_sha256": hashlib.sha256(b"nda").hexdigest(), "signed_by": "E1",
                       "signed_at": "2024-03-01T10:00", "identity_check": "实名认证"}),
        ("employee", {"employee_id": "E1", "name": "张三", "region": "CN-SH"}),
        ("notice", {"served_at": _iso(served_ns), "method": "当面"}),
    ):
        service.record_hr(tx=tx, case_id=case_id, kind=kind, data=data, actor=actor, role=role, now_ns=now)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_step_is_skipped_and_two_people_confirm(data: st.DataObject) -> None:
    store, case_id = _world()
    now = T0 + 3 * DAY
    taken: list[tuple[str, str, str, str]] = []  # (from, to, actor, role) of every step that happened
    for _ in range(data.draw(st.integers(1, 30), label="length")):
        now += 10**9
        name, role = data.draw(st.sampled_from(ACTORS), label="actor")
        with store.read() as tx:
            state = tx.get_case(case_id).state  # type: ignore[union-attr]
        kind = data.draw(st.sampled_from(["next", "next", "next", "any", "hr_records", "appeal", "decision",
                                          "resend"]), label="kind")
        try:
            with store.transaction() as tx:
                if kind == "hr_records":
                    _hr_records(tx, case_id, name, role, now)
                elif kind == "appeal":
                    service.record_hr(tx=tx, case_id=case_id, kind="appeal", data={
                        "received_at": _iso(T0 + 3 * DAY), "reason": "不服"}, actor=name, role=role, now_ns=now)
                elif kind == "decision":
                    service.record_hr(tx=tx, case_id=case_id, kind="decision", data={"text": "维持"}, actor=name,
                                      role=role, now_ns=now)
                elif kind == "resend":
                    service.resend(tx=tx, case_id=case_id, actor=name, role=role, now_ns=now)
                else:
                    nexts = [s.target.value for s in steps_from(state)] or STATES
                    to = data.draw(st.sampled_from(nexts if kind == "next" else STATES), label="to")
                    service.transition(tx=tx, case_id=case_id, to=to, actor=name, role=role, now_ns=now,
                                       fields={"reason": data.draw(st.sampled_from(["", "因为"]), label="reason")})
                    taken.append((state, to, name, role))
        except service.CaseError as exc:
            assert exc.status in (403, 409, 422)
    with store.read() as tx:
        history = list(tx.case_history(case_id))
        final = tx.get_case(case_id).state  # type: ignore[union-attr]
        outbox = list(tx.handoffs(case_id))
        audit = [e for e in tx.list_audit(cursor=None, limit=10_000).items if e.action.startswith("case.")]
    moves = [(h.from_state, h.to_state, h.actor) for h in history if h.action in ("open", "transition")]
    assert moves[0] == (None, "open", "ana")
    for (_, prev, _), (frm, to, _) in zip(moves, moves[1:]):
        assert frm == prev and (CaseState(frm), CaseState(to)) in TRANSITIONS  # one chain, every link in the table
    assert [(f, t, a) for f, t, a, _ in taken] == moves[1:]
    for frm, to, _, role in taken:
        step = step_for(frm, to)
        assert step is not None and allowed(role, step.permission)
    assert (moves[-1][1] if moves else "open") == final
    done = confirmations_of(history)
    assert not {p.casefold() for p in done.security} & {p.casefold() for p in done.hr}
    for i, (_, to, sender) in enumerate(moves):
        if to != "sent_to_payroll":
            continue
        path = [m[1] for m in moves[:i + 1]]
        positions = [path.index(s) for s in ORDER]
        assert positions == sorted(positions)  # every earlier state, in order
        sec = [a for f, t, a in moves[:i] if step_for(f or "", t or "") and step_for(f or "", t or "").confirms is Side.SECURITY]  # type: ignore[union-attr]
        hrs = [a for f, t, a in moves[:i] if step_for(f or "", t or "") and step_for(f or "", t or "").confirms is Side.HR]  # type: ignore[union-attr]
        assert sec and hrs and sec[-1] != hrs[-1] and sender not in sec
    assert len(outbox) == sum(1 for _, to, _ in moves if to == "sent_to_payroll") + sum(
        1 for h in history if h.action == "resend")
    assert len(audit) == len(history)  # every change audited, in the same transaction
    event(f"reached {max((ORDER.index(t) for _, t, _ in moves if t in ORDER), default=0)}")
    target(float(max((ORDER.index(t) for _, t, _ in moves if t in ORDER), default=0)), label="depth")
