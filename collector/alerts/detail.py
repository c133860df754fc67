"""An alert's detail as JSON-ready values: the alert, its evidence timeline, the agent's health around it.

People are shown by pseudonym: the user field, and the name wherever it stands as a word in a
sentence, a path, a host name (``privacy.codes.mask``). Only metadata exists: no file content.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Protocol, Sequence

from collector.alerts.models import Alert
from collector.events.models import StoredEvent
from collector.fleet.models import DEFAULT_INTERVAL_S, MISSED_INTERVALS
from collector.privacy.codes import mask
from collector.privacy.service import pseudonyms_of
from collector.storage.base import AgentArea, AlertArea, PrivacyArea
from collector.web.timefmt import format_ns

__all__ = ["alert_json", "evidence_json", "evidence_page", "agent_health", "masked_alerts", "evidence_cursor",
           "DELIVERY_RULES", "HEALTH_MARGIN_NS"]

DELIVERY_RULES: tuple[str, ...] = ("capture_gap", "spool_loss", "agent_silent", "agent_tamper", "agent_malformed",
                                   "agent_clock_skew", "agent_epoch_reset")
_HEALTH_KINDS = ("agent.heartbeat", "agent.start", "agent.stop", "agent.capture_gap", "agent.spool_full")
HEALTH_MARGIN_NS = 30 * 60 * 1_000_000_000
_HEALTH_CAP = 5000
_COPY_KEYS = ("source_paths", "match", "match_share", "destination_share", "archive_members", "read_by_same_process",
              "read_source", "read_time", "moved_out", "same_inode", "mountpoint", "device")


def alert_json(a: Alert, code: str) -> dict[str, Any]:
    """Shapes an alert for the API: the person by pseudonym, also inside the summary."""
    return {
        "id": a.id, "rule": a.rule, "severity": a.severity, "status": a.status, "user": code,
        "agent_id": a.agent_id, "created_at": format_ns(a.created_at_ns), "updated_at": format_ns(a.updated_at_ns),
        "last_event_at": format_ns(a.last_event_ns), "evidence_count": a.evidence_count,
        "summary": mask(a.summary, a.user, code), "occurrences": a.occurrences, "outcome": a.outcome,
        "assignee": a.assignee,
    }


def masked_alerts(*, tx: PrivacyArea, alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    """Shapes several alerts, looking their people's pseudonyms up at once."""
    codes = pseudonyms_of(tx=tx, user_names=[a.user for a in alerts])
    return [alert_json(a, codes.get(a.user, "")) for a in alerts]


def _m(text: str, user: str, code: str) -> str:
    return mask(text, user, code) if user else text


def evidence_json(e: StoredEvent, code: str) -> dict[str, Any]:
    """One evidence event: who, which file, which process, and where the content went."""
    attrs = dict(e.attributes)
    out: dict[str, Any] = {
        "id": e.id, "time": format_ns(e.time_ns), "kind": e.kind, "user": code,
        "path": _m(e.path, e.user, code), "size": e.size, "sha256": e.sha256,
        "process": {"name": _m(e.process, e.user, code), "exe": _m(e.exe, e.user, code), "pid": e.pid},
    }
    copy = {k: attrs[k] for k in _COPY_KEYS if k in attrs}
    if e.kind in ("file.copy", "file.move", "usb.write") or copy:
        sources = [str(p) for p in attrs.get("source_paths") or []]
        if e.kind == "usb.write":
            source, dest = (sources[0] if sources else ""), e.path
        else:
            source, dest = e.path, e.dest_path
        out["flow"] = {
            "source": _m(source, e.user, code), "destination": _m(dest, e.user, code),
            "match": copy.get("match"), "match_share": copy.get("match_share"),
            "destination_share": copy.get("destination_share"),
            "sources": [_m(p, e.user, code) for p in sources][:20],
            "archive_members": [str(m) for m in attrs.get("archive_members") or []][:20],
            "read_by_same_process": bool(copy.get("read_by_same_process", False)),
            "device": _m(str(copy.get("device") or copy.get("mountpoint") or ""), e.user, code) or None,
        }
    elif e.dest_path:
        out["dest_path"] = _m(e.dest_path, e.user, code)
    return out


def evidence_cursor(e: StoredEvent) -> str:
    """The cursor after an evidence event: its time and row."""
    return f"{e.time_ns}_{e.row_id or 0}"


class _DetailTx(AlertArea, AgentArea, PrivacyArea, Protocol):
    """What an alert's detail reads."""


def evidence_page(*, tx: _DetailTx, alert: Alert, after: tuple[int, int] | None,
                  limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """A page of an alert's evidence in time order, and the cursor to the next page."""
    found = tx.evidence_events(alert_id=alert.id or 0, after=after, limit=limit + 1)
    page = list(found[:limit])
    codes = pseudonyms_of(tx=tx, user_names=[e.user for e in page])
    items = [evidence_json(e, codes.get(e.user, "")) for e in page]
    return items, evidence_cursor(page[-1]) if len(found) > limit and page else None


def _silences(times: Sequence[int], since: int, until: int, interval_ns: int) -> list[dict[str, Any]]:
    points = [since, *times, until]
    out = []
    for a, b in zip(points, points[1:]):
        if b - a > MISSED_INTERVALS * interval_ns:
            out.append({"from": format_ns(a), "to": format_ns(b), "seconds": round((b - a) / 1e9)})
    return out[:20]


def agent_health(*, tx: _DetailTx, alert: Alert, first_ns: int, now_ns: int | None = None) -> dict[str, Any]:
    """The agent around the alert's evidence: heartbeats and silences, capture gaps, spool refusals,
    its starts and stops, and the delivery layer's alerts for it."""
    now = time.time_ns() if now_ns is None else now_ns
    agent = tx.get_agent(alert.agent_id) if alert.agent_id else None
    since = first_ns - HEALTH_MARGIN_NS
    until = min(max(alert.last_event_ns, first_ns) + HEALTH_MARGIN_NS, now)
    if agent is not None:
        since = max(since, agent.enrolled_at_ns)
    found = tx.agent_events_between(agent_id=alert.agent_id, kinds=_HEALTH_KINDS, since_ns=since, until_ns=until,
                                    limit=_HEALTH_CAP) if alert.agent_id else []
    beats = [e.time_ns for e in found if e.kind == "agent.heartbeat"]
    interval_s = (agent.heartbeat_interval_s if agent and agent.heartbeat_interval_s else DEFAULT_INTERVAL_S)
    notes = [e for e in found if e.kind != "agent.heartbeat"]
    delivery = tx.alerts_of_agent(agent_id=alert.agent_id, rules=DELIVERY_RULES, since_ns=since, until_ns=until,
                                  limit=50) if alert.agent_id else []
    user, code = alert.user, pseudonyms_of(tx=tx, user_names=[alert.user]).get(alert.user, "")
    return {
        "agent_id": alert.agent_id,
        "hostname": _m(agent.hostname, user, code) if agent else None,
        "liveness": agent.liveness if agent else None,
        "last_seen": format_ns(agent.last_seen_ns) if agent and agent.last_seen_ns else None,
        "heartbeat_interval_s": interval_s,
        "window": {"from": format_ns(since), "to": format_ns(until)},
        "heartbeats": len(beats), "complete": len(found) < _HEALTH_CAP,
        "silences": _silences(beats, since, until, int(interval_s * 1e9)) if agent else [],
        "capture_gaps": [_note(e) for e in notes if e.kind == "agent.capture_gap"][:50],
        "spool_refusals": [_note(e) for e in notes if e.kind == "agent.spool_full"][:50],
        "starts_stops": [_note(e) for e in notes if e.kind in ("agent.start", "agent.stop")][:50],
        "delivery_alerts": [{"id": a.id, "rule": a.rule, "severity": a.severity, "status": a.status,
                             "created_at": format_ns(a.created_at_ns), "occurrences": a.occurrences}
                            for a in delivery if a.id != alert.id],
    }


def _note(e: StoredEvent) -> dict[str, Any]:
    keep: Mapping[str, Any] = {k: v for k, v in e.attributes.items()
                               if k in ("source", "count", "action", "refused", "cap_bytes", "first_refused_ns",
                                        "last_refused_ns", "reason", "capture")}
    return {"time": format_ns(e.time_ns), "kind": e.kind, **keep}
