"""Storage for the collector: per-area interfaces and a unit of work (``base``), an in-memory fake
(``memory``) and SQL for SQLite and PostgreSQL (``sql``); one contract suite
(tests/collector/storage) that every backend passes."""

from collector.storage.base import (
    AlreadyExists,
    ChainConflict,
    Store,
    StoreError,
    StoreUnavailable,
    Transaction,
)
from collector.storage.memory import MemoryStore
from collector.storage.sql import SqlStore, open_store

__all__ = ["AlreadyExists", "ChainConflict", "Store", "StoreError", "StoreUnavailable", "Transaction",
           "MemoryStore", "SqlStore", "open_store"]
