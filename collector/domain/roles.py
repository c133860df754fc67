"""Roles and what each may do, as data. Views ask for a permission, never for a role.

IT runs the fleet and the accounts but does not read what employees did; security reviews events
and alerts and builds cases; HR sees cases and confirms them; the auditor reads everything, the
audit log included, and changes nothing. Which case step needs which permission is the cases
package's transition table (collector/cases/models.py).
"""

from __future__ import annotations

__all__ = ["ROLES", "PERMISSIONS", "allowed", "permissions_of"]

ROLES: frozenset[str] = frozenset({"it_admin", "security_analyst", "hr", "auditor", "employee"})

_SEC, _HR, _IT, _AUD = "security_analyst", "hr", "it_admin", "auditor"
_EMP = "employee"  # a monitored employee: sees and acknowledges their own notices, nothing else

# permission -> roles holding it
PERMISSIONS: dict[str, frozenset[str]] = {
    "events:read": frozenset({_SEC, _AUD}),
    "alerts:read": frozenset({_SEC, _AUD}),
    "alerts:triage": frozenset({_SEC}),
    "cases:read": frozenset({_SEC, _HR, _AUD}),
    "cases:write": frozenset({_SEC}),            # open a case, security's steps, comments and attachments
    "cases:hr": frozenset({_HR}),                # the documented loss, the agreement, the notice, HR's steps
    "cases:comment": frozenset({_SEC, _HR}),
    "identity:reveal": frozenset({_SEC, _HR}),   # show a real name behind a pseudonym, with a reason; audited
    "agents:read": frozenset({_IT, _SEC, _AUD}),   # the fleet and each agent's health
    "agents:write": frozenset({_IT}),             # labels, revocation, enrollment tokens
    "policies:read": frozenset({_IT, _AUD}),      # policy documents and where they apply
    "policies:write": frozenset({_IT}),           # edit, version and assign policies
    "evidence:export": frozenset({_SEC, _HR, _AUD}),  # a case's evidence bundle and its report
    "agreements:read": frozenset({_HR, _SEC, _AUD}),  # the agreement registry and signed copies
    "agreements:write": frozenset({_HR}),         # templates, imports of signed copies, notices
    "notices:self": frozenset({_EMP}),            # one's own agreements and monitoring notice, acknowledged
    "privacy:admin": frozenset({_HR}),            # legal holds and access requests (an export of one person's records: HR only, not IT)
    "privacy:read": frozenset({_HR, _IT, _AUD}),  # the /privacy page: periods in force, holds, runs, requests
    "users:admin": frozenset({_IT}),
    "audit:read": frozenset({_AUD}),
    "service:read": frozenset({_IT, _AUD}),      # /metrics and the API description
    "account:self": frozenset({_SEC, _HR, _IT, _AUD, _EMP}),  # one's own password, language and API tokens
}


def allowed(role: str, permission: str) -> bool:
    """Tells whether a role holds a permission."""
    return role in PERMISSIONS.get(permission, frozenset())


def permissions_of(role: str) -> frozenset[str]:
    """Every permission a role holds."""
    return frozenset(p for p, roles in PERMISSIONS.items() if role in roles)
