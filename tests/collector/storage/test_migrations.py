"""Migrations build the schema the code defines, on SQLite and PostgreSQL, and upgrade a first-release store."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from collector.storage import open_store
from collector.storage.base import StoreError
from collector.storage.sql.schema import metadata

from tests.conftest import fresh_pg_schema, pg_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'collector.db'}"
        return
    with fresh_pg_schema("m") as schema:
        yield pg_url(schema)


def _differences(url: str) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    # SQLite reports no server defaults and types by affinity; what matters is tables, columns, indexes
    return [d for d in found if not (isinstance(d, list) and d and d[0][0] in ("modify_type", "modify_default"))]


def test_a_new_store_has_exactly_the_schema_the_code_defines(url: str) -> None:
    open_store(url).close()
    assert _differences(url) == []


def test_a_first_release_store_is_upgraded_with_its_data(url: str) -> None:
    from importlib import import_module

    first = import_module("collector.storage.sql.migrations.versions.0001_initial")
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # what the first release's create_all left behind
        first.metadata.create_all(conn)
        conn.execute(first.schema_info.insert().values(version=1))
        conn.execute(first.alerts.insert().values(rule="read_burst", severity="high", status="open", user_name="u",
                                                  agent_id="a", created_at_ns=1, updated_at_ns=1, event_ids="[]",
                                                  summary="old", last_event_ns=1))
    engine.dispose()
    store = open_store(url)
    with store.read() as tx:
        [alert] = tx.list_alerts(cursor=None, limit=5).items
    store.close()
    assert alert.summary == "old" and alert.occurrences == 1 and alert.group_key is None
    assert _differences(url) == []
    open_store(url).close()  # opening again changes nothing


def test_a_store_from_a_newer_collector_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    open_store(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(StoreError, match="not one this collector knows"):
        open_store(url)
