"""Human labels of rules, closure reasons, sorts, actions and event kinds (English; Chinese in messages.zh.toml)."""

from __future__ import annotations

__all__ = ["RULE_LABELS", "OUTCOME_LABELS", "SORT_LABELS", "ACTION_LABELS", "EVENT_KIND_LABELS", "MATCH_LABELS", "LIVENESS_LABELS",
           "rule_label"]

RULE_LABELS: dict[str, str] = {
    "read_burst": "Burst of reads",
    "bulk_read": "Reads far above the person's usual",
    "usb_exfiltration": "Sensitive content to removable media",
    "sensitive_copy_out": "Sensitive content copied out",
    "after_hours": "Access outside working hours",
    "first_access": "First access to a sensitive folder",
    "capture_gap": "Capture gap on the agent",
    "spool_loss": "Agent spool full, events refused",
    "agent_silent": "Agent silent",
    "agent_tamper": "Agent batch forged or tampered",
    "agent_malformed": "Malformed batch from an agent",
    "agent_clock_skew": "Agent clock skewed",
    "agent_epoch_reset": "Agent chain restarted",
    "store_tamper": "Stored evidence changed behind the collector",
    "certificate_expiring": "Agent certificate about to expire",
    "policy_refused": "Agent refused its policy",
}

OUTCOME_LABELS: dict[str, str] = {
    "true_positive": "True positive",
    "false_positive": "False positive",
    "benign": "Benign",
    "duplicate": "Duplicate",
}

SORT_LABELS: dict[str, str] = {
    "newest": "Newest first", "oldest": "Oldest first", "severity": "Most severe first",
    "evidence": "Most evidence first",
}

ACTION_LABELS: dict[str, str] = {
    "acknowledge": "Acknowledge", "close": "Close the alert", "reopen": "Reopen", "assign": "Assign the alert",
    "unassign": "Unassign",
}

LIVENESS_LABELS: dict[str, str] = {"enrolled": "Enrolled, not heard from yet", "active": "Reporting",
                                   "stopped": "Stopped", "silent": "Silent"}

EVENT_KIND_LABELS: dict[str, str] = {
    "file.read": "Read", "file.write": "Write", "file.create": "Create", "file.delete": "Delete",
    "file.move": "Move", "file.copy": "Copy", "usb.write": "Write to removable media",
    "usb.mount": "Removable media mounted", "usb.unmount": "Removable media removed",
    "agent.capture_gap": "Capture gap", "agent.spool_full": "Spool full", "agent.start": "Agent started",
    "agent.stop": "Agent stopped", "agent.heartbeat": "Heartbeat",
}

MATCH_LABELS: dict[str, str] = {"exact": "exact copy", "partial": "partial copy", "archive": "inside an archive"}


def rule_label(rule: str) -> str:
    """The English label of a rule (its name if it has none)."""
    return RULE_LABELS.get(rule, rule)
