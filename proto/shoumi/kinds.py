"""The stable event kinds of protocol v1. Adding one is a protocol change: document it in the README."""

from __future__ import annotations

__all__ = ["EVENT_KINDS"]

EVENT_KINDS: frozenset[str] = frozenset(
    {
        "file.read",
        "file.write",
        "file.create",
        "file.delete",
        "file.move",
        "file.copy",
        "usb.mount",
        "usb.unmount",
        "usb.write",
        "agent.start",
        "agent.stop",
        "agent.heartbeat",
        "agent.capture_gap",
        "agent.spool_full",
        "policy.applied",
        "policy.refused",
    }
)
