"""A notice's electronic proof of service (the collector's WeCom or email notice), and the rule that serves it.

The collector (collector/wecom) sends the bridge's notice to the employee and reports, per notice:
``channel`` (``wecom`` or ``email``), ``msgid`` (WeCom's message id, or the email's Message-ID),
``delivered_at`` (WeCom answered the msgid for the employee's userid / the mail server took it),
``read_at`` (a WeCom read receipt, where WeCom gives one), ``opened_at`` and ``acknowledged_at`` (the employee,
signed in, opened the full text and acknowledged it), ``text_sha256`` of the text shown, times ISO 8601
with an offset.

The rule (docs/payroll.md "Notice served electronically"): a notice is **served on the day (China time) it was
acknowledged**. A data message that can be shown and retrieved is written form (电子签名法 第四条); the
acknowledgement is the employee's own act after reading the whole text, which is what an arbitrator asks
for ("how did it reach the employee and when did they read it"). Delivery alone (WeCom's msgid) says the
message entered WeCom, not that the employee saw it, so a proof without ``acknowledged_at`` is refused:
HR can still serve on paper and record the day with ``notice-served``. The gate itself (amount stated,
served by the period's end, appeal window past) is unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Mapping

from payroll_bridge.errors import InvalidInput

__all__ = ["ServiceProof", "parse_proof", "CHANNELS"]

CHANNELS = ("wecom", "email")
_CHINA = timezone(timedelta(hours=8))
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ServiceProof:
    served_on: date
    document: dict[str, Any]  # what is kept with the notice and audited


def _time(proof: Mapping[str, Any], name: str, *, required: bool) -> datetime | None:
    value = proof.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"the proof of service has no {name}: "
                               + ("a notice delivered but not acknowledged is not served" if name == "acknowledged_at"
                                  else "it was never delivered"))
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} is an ISO 8601 time with its offset")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} is not an ISO 8601 time: {value[:40]!r}") from None
    if at.tzinfo is None:
        raise InvalidInput(f"{name} needs its UTC offset (e.g. +08:00)")
    return at


def parse_proof(proof: Any, *, notice_id: str, now: datetime) -> ServiceProof:
    """Checks a proof of service and says the day it serves the notice on; InvalidInput naming what is wrong."""
    if not isinstance(proof, Mapping):
        raise InvalidInput("the proof of service is a JSON object")
    if proof.get("notice_id") not in (None, notice_id):
        raise InvalidInput(f"the proof is for notice {str(proof.get('notice_id'))[:64]!r}, not {notice_id}")
    channel = proof.get("channel")
    if channel not in CHANNELS:
        raise InvalidInput(f"channel is one of {', '.join(CHANNELS)}")
    msgid = proof.get("msgid")
    if not isinstance(msgid, str) or not 0 < len(msgid) <= 200:
        raise InvalidInput("msgid (the message's id at WeCom or the mail server) is required")
    sha = proof.get("text_sha256")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise InvalidInput("text_sha256 is the SHA-256 (hex) of the text the employee was shown")
    delivered = _time(proof, "delivered_at", required=True)
    acknowledged = _time(proof, "acknowledged_at", required=True)
    read = _time(proof, "read_at", required=False)
    opened = _time(proof, "opened_at", required=False)
    assert delivered is not None and acknowledged is not None
    if acknowledged < delivered:
        raise InvalidInput("acknowledged_at is before delivered_at")
    if acknowledged > now + timedelta(minutes=5):
        raise InvalidInput("acknowledged_at is in the future")
    document = {"channel": channel, "msgid": msgid, "text_sha256": sha,
                "delivered_at": delivered.isoformat(), "acknowledged_at": acknowledged.isoformat(),
                "read_at": read.isoformat() if read else None, "opened_at": opened.isoformat() if opened else None,
                "acknowledged_by": str(proof.get("acknowledged_by") or "")[:128] or None,
                "collector_notice": str(proof.get("collector_notice") or "")[:64] or None}
    return ServiceProof(acknowledged.astimezone(_CHINA).date(), document)
