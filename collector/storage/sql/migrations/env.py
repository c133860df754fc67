"""Alembic's entry point: the collector runs migrations itself on the connection it opened."""

from __future__ import annotations

from alembic import context

from collector.storage.sql.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  version_table="alembic_version")
with context.begin_transaction():
    context.run_migrations()
