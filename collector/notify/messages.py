"""The texts of notifications, Chinese first with the English in brackets (or one language): pure.

They are built only from a ``Notification``'s number, rule, severity and states and the collector's
public base URL, so no user name, pseudonym, file path or host name can reach a group chat or an
inbox. Rule and state names are reduced to ``[A-Za-z0-9_.-]`` so nothing stored can inject markdown.
A WeCom markdown message is at most 4096 bytes of UTF-8; a digest lists numbers until that budget is
spent and says how many more there are.
"""

from __future__ import annotations

import re
from typing import Sequence

from collector.notify.models import Notification

__all__ = ["WECOM_MARKDOWN_MAX_BYTES", "wecom_markdown", "email_message", "Language"]

WECOM_MARKDOWN_MAX_BYTES = 4096
Language = str  # "both" | "zh" | "en"

_SEVERITY_ZH = {"low": "低", "medium": "中", "high": "高", "critical": "严重"}
_STATE_ZH = {
    "open": "已立案", "under_review": "审查中", "security_confirmed": "安全已确认", "hr_confirmed": "人事已确认",
    "sent_to_payroll": "已移交薪资", "dismissed": "已驳回", "appealed": "申诉中", "closed": "已结案",
}
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def _clean(word: str) -> str:
    return _SAFE.sub("", word)[:64]


def _say(lang: Language, zh: str, en: str) -> str:
    if lang == "zh":
        return zh
    if lang == "en":
        return en
    return f"{zh} ({en})"


def _severity(lang: Language, severity: str) -> str:
    s = _clean(severity)
    return _say(lang, _SEVERITY_ZH.get(s, s), s)


def _state(lang: Language, state: str) -> str:
    s = _clean(state)
    return _say(lang, _STATE_ZH.get(s, s), s)


def _link(base_url: str, kind: str, number: int) -> str:
    return f"{base_url.rstrip('/')}/{'alerts' if kind == 'alert' else 'cases'}/{int(number)}"


def _title(lang: Language, n: Notification) -> str:
    if n.kind == "alert":
        return _say(lang, f"高危告警 #{n.number}", f"High-severity alert #{n.number}")
    if not n.from_state:
        return _say(lang, f"新案件 #{n.number}", f"New case #{n.number}")
    return _say(lang, f"案件 #{n.number} 状态变更", f"Case #{n.number} changed")


def _facts(lang: Language, n: Notification) -> list[str]:
    if n.kind == "alert":
        return [f"{_say(lang, '规则', 'Rule')}: {_clean(n.rule)}", f"{_say(lang, '严重程度', 'Severity')}: "
                f"{_severity(lang, n.severity)}"]
    if not n.from_state:  # the case was opened
        return [f"{_say(lang, '状态', 'State')}: {_state(lang, n.to_state)}"]
    return [f"{_say(lang, '状态', 'State')}: {_state(lang, n.from_state)} → {_state(lang, n.to_state)}"]


def _open(lang: Language, kind: str) -> str:
    return _say(lang, "查看告警", "Open the alert") if kind == "alert" else _say(lang, "查看案件", "Open the case")


def _item(n: Notification) -> str:
    return f"#{n.number}" if n.kind == "alert" else f"#{n.number} → {_clean(n.to_state)}"


def _digest_head(lang: Language, notes: Sequence[Notification]) -> str:
    kinds = {n.kind for n in notes}
    if kinds == {"alert"}:
        return _say(lang, f"{len(notes)} 条新的高危告警", f"{len(notes)} new high-severity alerts")
    if kinds == {"case"}:
        return _say(lang, f"{len(notes)} 条案件变更", f"{len(notes)} case changes")
    return _say(lang, f"{len(notes)} 条新通知", f"{len(notes)} new notifications")


def _digest_lines(lang: Language, notes: Sequence[Notification], base_url: str, budget: int) -> list[str]:
    """The digest's body: per kind a line of numbers, cut where the byte budget ends."""
    base = base_url.rstrip("/")
    links = []
    if any(n.kind == "alert" for n in notes):
        links.append((_say(lang, "查看告警队列", "Open the alert queue"), f"{base}/alerts"))
    if any(n.kind == "case" for n in notes):
        links.append((_say(lang, "查看案件", "Open the cases"), f"{base}/cases"))
    tail = [f"[{text}]({url})" for text, url in links]
    used = sum(len(x.encode()) + 1 for x in tail)
    groups = [(label, [_item(n) for n in notes if n.kind == kind])
              for kind, label in (("alert", _say(lang, "告警", "Alerts")), ("case", _say(lang, "案件", "Cases")))]
    groups = [(label, items) for label, items in groups if items]
    more_room = len(_say(lang, ", …及其他 000000 条", ", … and 000000 more").encode())
    smallest = [len(f"> {label}: ".encode()) + more_room + 1 for label, _ in groups]  # a line that lists none
    lines: list[str] = []
    for i, (label, items) in enumerate(groups):
        room = budget - used - sum(smallest[i + 1:])  # what the later kinds' lines need stays free
        line, shown = f"> {label}: ", 0
        for item in items:
            piece = (", " if shown else "") + item
            if len((line + piece).encode()) + more_room + 1 > room:
                break
            line += piece
            shown += 1
        if shown < len(items):
            rest = len(items) - shown
            line += (", " if shown else "") + _say(lang, f"…及其他 {rest} 条", f"… and {rest} more")
        used += len(line.encode()) + 1
        lines.append(line)
    return lines + tail


def wecom_markdown(notes: Sequence[Notification], *, base_url: str, lang: Language = "both",
                   max_bytes: int = WECOM_MARKDOWN_MAX_BYTES) -> str:
    """The markdown content of one robot message: one notification, or a digest of several."""
    if not notes:
        raise ValueError("a message needs at least one notification")
    if len(notes) == 1:
        n = notes[0]
        text = "\n".join([f"### {_title(lang, n)}", *(f"> {x}" for x in _facts(lang, n)),
                          f"[{_open(lang, n.kind)}]({_link(base_url, n.kind, n.number)})"])
    else:
        head = f"### {_digest_head(lang, notes)}"
        text = "\n".join([head, *_digest_lines(lang, notes, base_url, max_bytes - len(head.encode()) - 1)])
    if len(text.encode()) > max_bytes:  # a base URL so long nothing fits: cut at a character boundary
        text = text.encode()[:max_bytes].decode(errors="ignore")
    return text


def email_message(notes: Sequence[Notification], *, base_url: str, lang: Language = "both") -> tuple[str, str]:
    """The subject and plain-text body of one email: one notification, or a digest of several."""
    if not notes:
        raise ValueError("a message needs at least one notification")
    if len(notes) == 1:
        n = notes[0]
        subject = f"[Shoumi] {_title(lang, n)}"
        body = [*_facts(lang, n), f"{_open(lang, n.kind)}: {_link(base_url, n.kind, n.number)}"]
    else:
        subject = f"[Shoumi] {_digest_head(lang, notes)}"
        body = [f"{_title(lang, n)}: {_link(base_url, n.kind, n.number)}" for n in notes[:500]]
        if len(notes) > 500:
            body.append(_say(lang, f"…及其他 {len(notes) - 500} 条", f"… and {len(notes) - 500} more"))
    footer = _say(lang, "此消息不含个人信息;详情请登录守密查看。",
                  "This message holds no personal data; sign in to Shoumi for the details.")
    return subject, "\n".join([*body, "", footer]) + "\n"
