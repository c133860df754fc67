"""A policy document: checked with the agent's own parser, shown as form fields, written back as TOML. Pure.

The collector never judges a document itself: ``check_document`` hands it to ``agent.policy`` (the
one parser, shared), so a document the collector saves is one the agent accepts, and a refusal
names the same key and reason the agent would give. The form edits the main lists; keys the form
does not show are kept as they were in the version being edited.

Errors::

    ValueError
    └── DocumentError      (key, reason): not TOML, too large, or refused by the agent's parser
"""

from __future__ import annotations

import math
import tomllib
from typing import Any, Mapping

from agent import policy as agent_policy

__all__ = ["DocumentError", "check_document", "normalize", "FORM_LISTS", "FORM_NUMBERS", "form_values", "with_form",
           "to_toml", "MAX_DOCUMENT_BYTES"]

MAX_DOCUMENT_BYTES = agent_policy.MAX_DOCUMENT_BYTES  # the agent's bound; an Ack carries up to 4 MiB
FORM_LISTS = ("sensitive_folders", "destinations", "removable_mounts", "exclude_paths", "exclude_processes")
FORM_NUMBERS = ("max_hash_bytes", "partial_match_share")


class DocumentError(ValueError):
    """A document the agent would refuse; ``key`` names the entry ("" for the whole document)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


def _table(document: str) -> dict[str, Any]:
    try:
        return agent_policy.policy_table(document)  # the agent's own reading: size, UTF-8, TOML, [policy]
    except agent_policy.PolicyError as exc:
        raise DocumentError(exc.key, exc.reason) from exc


def normalize(document: str) -> str:
    """The document to store: as given, except that a whole agent.toml holding only ``[policy]`` becomes that table."""
    table = _table(document)
    try:
        wrapped = set(tomllib.loads(document)) == {"policy"}
    except tomllib.TOMLDecodeError:  # pragma: no cover - _table raised already
        wrapped = False
    return to_toml(table) if wrapped else document


def check_document(document: str) -> agent_policy.SensitiveFolderPolicy:
    """Parses a document exactly as the agent will; raises DocumentError with the key and reason."""
    try:
        return agent_policy.parse_policy_document(document)  # the agent's entry point for pushed documents
    except agent_policy.PolicyError as exc:
        raise DocumentError(exc.key, exc.reason) from exc


def form_values(document: str) -> dict[str, Any]:
    """The form's fields of a (valid) document: each list one entry a line, the numbers as text."""
    table = _table(document)
    values: dict[str, Any] = {key: "\n".join(str(v) for v in table.get(key, ())) for key in FORM_LISTS}
    values["max_hash_bytes"] = str(table.get("max_hash_bytes", agent_policy.DEFAULT_MAX_HASH_BYTES))
    values["partial_match_share"] = str(table.get("partial_match_share", agent_policy.DEFAULT_PARTIAL_MATCH_SHARE))
    return values


def with_form(previous: str | None, form: Mapping[str, str]) -> str:
    """The document the form describes: the previous version's keys, the form's lists and numbers over them."""
    table = _table(previous) if previous else {}
    for key in FORM_LISTS:
        entries = [line.strip() for line in str(form.get(key, "")).splitlines() if line.strip()]
        if entries:
            table[key] = entries
        else:
            table.pop(key, None)
    for key in FORM_NUMBERS:
        text = str(form.get(key, "")).strip()
        if not text:
            table.pop(key, None)
            continue
        try:
            table[key] = int(text) if key == "max_hash_bytes" else float(text)
        except ValueError as exc:
            raise DocumentError(key, f"{text[:40]!r} is not a number") from exc
    return to_toml(table)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character (DEL included) escaped."""
    return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                         for c in text) + '"'


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DocumentError(where, "must be a finite number")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_string(k)} = {_value(v, where)}" for k, v in value.items()) + " }"
    raise DocumentError(where, f"cannot be written as TOML ({type(value).__name__})")


def to_toml(table: Mapping[str, Any]) -> str:
    """Writes a policy table as TOML, one key a line (lists of many entries one entry a line)."""
    lines = []
    for key, value in table.items():
        name = key if key.replace("_", "").isalnum() and key.isascii() else _string(key)
        if isinstance(value, list) and len(value) > 1:
            lines.append(f"{name} = [\n" + "".join(f"  {_value(v, key)},\n" for v in value) + "]")
        else:
            lines.append(f"{name} = {_value(value, key)}")
    return "\n".join(lines) + "\n"
