"""The SQL backend: SQLite and PostgreSQL, one module per area, migrations in ./migrations."""

from collector.storage.sql.store import DB_FILE, SqlStore, SqlTransaction, open_store

__all__ = ["DB_FILE", "SqlStore", "SqlTransaction", "open_store"]
