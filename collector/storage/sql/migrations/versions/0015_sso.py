"""Single sign-on (issue 16): users a provider signed in, and provider sign-ins on their way back.

``users`` gains ``provider`` and ``subject`` (unique together: one collector user per person at a
provider); ``sso_pending`` holds the state of an OIDC or WeCom sign-in between the redirect and the
callback, keyed by the state's hash and deleted when the callback takes it (collector/people/sso).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as t:
        t.add_column(sa.Column("provider", sa.String(16)))
        t.add_column(sa.Column("subject", sa.String(255)))
    op.create_index("uq_users_provider_subject", "users", ["provider", "subject"], unique=True)
    op.create_table(
        "sso_pending",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("nonce", sa.Text, nullable=False),
        sa.Column("verifier", sa.Text, nullable=False),
        sa.Column("next_path", sa.Text, nullable=False),
        sa.Column("created_at_ns", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sso_pending")
    op.drop_index("uq_users_provider_subject", "users")
    with op.batch_alter_table("users") as t:
        t.drop_column("subject")
        t.drop_column("provider")
