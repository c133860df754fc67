"""Storage for the collector: one interface (``Store``), one SQL implementation for SQLite and
PostgreSQL, and one contract test suite (tests/collector/storage) that every backend passes."""

from collector.storage.base import (
    AlreadyExists,
    ChainConflict,
    Store,
    StoreError,
)
from collector.storage.sql import SqlStore, open_store

__all__ = ["AlreadyExists", "ChainConflict", "Store", "StoreError", "SqlStore", "open_store"]
