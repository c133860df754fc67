"""What each index of the events table costs SQLite per inserted row: storage's own limit on ingest.

Re-inserts the events a collector stored (a data directory kept by ``bench/ingest.py --keep``) into
fresh SQLite files with the collector's events table as created there (WAL, synchronous=FULL,
1,000 rows per transaction, sqlite3 ``executemany``: no Python between the rows), once with every
index, once without each secondary index in turn, once with none of them; prints rows/s and CPU
µs per row, and one JSON line {"rows", "all": {...}, "without": {index: {...}}, "none": {...}}.

    python bench/ingest.py --keep ...            # prints "data and logs kept in DIR"
    python bench/event_indexes.py DIR/collector/collector.db
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

CHUNK = 1_000


def insert_rate(path: Path, table_sql: str, indexes: list[str], columns: list[str],
                rows: list[tuple[Any, ...]]) -> dict[str, float]:
    """Rows/s and CPU µs a row of inserting ``rows`` into a fresh table with these indexes."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(table_sql)
        for sql in indexes:
            conn.execute(sql)
        insert = f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(rows), CHUNK):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, rows[i:i + CHUNK])
            conn.execute("COMMIT")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        conn.close()
    return {"rows_per_s": round(len(rows) / wall), "cpu_us_per_row": round(cpu / len(rows) * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("database", type=Path, help="a collector.db with stored events")
    parser.add_argument("--rows", type=int, default=200_000, help="at most this many of its events")
    args = parser.parse_args()
    if not args.database.is_file():
        raise SystemExit(f"no such database: {args.database}")
    source = sqlite3.connect(f"file:{args.database}?mode=ro", uri=True)
    table = source.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()
    if table is None:
        raise SystemExit(f"{args.database} has no events table")
    columns = [r[1] for r in source.execute("PRAGMA table_info(events)") if r[1] != "row_id"]
    indexes = dict(source.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                                  "tbl_name = 'events' AND sql IS NOT NULL ORDER BY name").fetchall())
    rows = source.execute(f"SELECT {', '.join(columns)} FROM events ORDER BY row_id LIMIT ?", (args.rows,)).fetchall()
    source.close()
    if not rows:
        raise SystemExit(f"{args.database} holds no events: run bench/ingest.py --keep first")
    print(f"{len(rows):,} stored events, {len(columns)} columns; secondary indexes: {', '.join(indexes)} "
          "(the unique (agent_id, epoch, seq) key stays in every run)")
    with tempfile.TemporaryDirectory(prefix="shoumi-indexes-") as tmp:
        def run(label: str, kept: list[str]) -> dict[str, float]:
            figures = insert_rate(Path(tmp) / f"{len(kept)}-{label}.db", table[0], kept, columns, rows)
            print(f"  {label:32s} {figures['rows_per_s']:>9,} rows/s  {figures['cpu_us_per_row']:6.2f} µs CPU a row")
            return figures

        every = run("every index", list(indexes.values()))
        without = {name: run(f"without {name}", [sql for n, sql in indexes.items() if n != name]) for name in indexes}
        none = run("no secondary index", [])
    print(json.dumps({"rows": len(rows), "all": every, "without": without, "none": none}))


if __name__ == "__main__":
    main()
