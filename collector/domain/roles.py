"""Roles and what each may do, as data. Views ask for a permission, never for a role."""

from __future__ import annotations

__all__ = ["ROLES", "PERMISSIONS", "allowed"]

ROLES: frozenset[str] = frozenset({"it_admin", "security_analyst", "hr", "auditor"})

# permission -> roles holding it. IT runs the fleet but does not read what employees did;
# security reviews events and alerts; HR sees alerts that became cases (cases come later);
# the auditor reads everything and the audit log, and changes nothing.
PERMISSIONS: dict[str, frozenset[str]] = {
    "events:read": frozenset({"security_analyst", "auditor"}),
    "alerts:read": frozenset({"security_analyst", "auditor"}),
    "alerts:triage": frozenset({"security_analyst"}),
    "agents:read": frozenset({"it_admin", "security_analyst", "auditor"}),
    "audit:read": frozenset({"auditor"}),
}


def allowed(role: str, permission: str) -> bool:
    """Tells whether a role holds a permission."""
    return role in PERMISSIONS.get(permission, frozenset())
