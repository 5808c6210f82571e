"""The ClickHouse limits export_bench.py compares segport against, each run in its own process (chdb allows one
process per folder): ClickHouse writing the export's exact query into a file itself
(``INSERT INTO FUNCTION file(...)``, no segport around it), pandas on the same query, and ClickHouse loading
the users' Parquet file into a table (the import's limit).

    python bench/clickhouse_raw.py copy   DATA_DIR CHDB_DIR FORMAT KEYS_JSON TARGET
    python bench/clickhouse_raw.py plain  DATA_DIR CHDB_DIR FORMAT KEYS_JSON TARGET WHERE
    python bench/clickhouse_raw.py pandas DATA_DIR CHDB_DIR FORMAT KEYS_JSON ROWS
    python bench/clickhouse_raw.py import PARQUET CHDB_DIR

``plain`` writes the same columns read from the plain users table with ``WHERE`` (the segment's rule as a user
would write it by hand) instead of the segment's membership. Each prints one JSON line: seconds (and CPU
seconds of the process, all of ClickHouse's threads, for copy and plain; rows for pandas)."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from segport.app import open_stores
from segport.domain.export import build_spec, columns_of
from segport.engine.base import Target
from segport.engine.clickhouse.engine import ClickHouseEngine
from segport.engine.clickhouse.sql import ch_string
from segport.engine.clickhouse.writer import SETTINGS, export_query
from segport.settings import Settings

BIG, SEGMENT = "BenchBig", "seg_half"
FORMATS = {"csv+key": ("csv", "key"), "csv+name": ("csv", "name"), "json": ("json", None)}


def _query(
    data_dir: Path, engine: ClickHouseEngine, name: str, keys: list[str], where: str | None = None
) -> tuple[str, str]:
    stores = open_stores(Settings(data_dir=data_dir))
    try:
        catalog = stores.meta.catalog(BIG)
    finally:
        stores.close()
    fmt, header = FORMATS[name]
    spec = build_spec(keys, fmt, header, catalog, 60)
    snap = engine.current(BIG)
    source = engine.source(snap, Target("segment", SEGMENT))
    if where is not None:
        source = f"{engine.table(snap.users)} AS u WHERE {where}"
    return export_query(source, columns_of(spec, catalog), spec)


def main() -> None:
    mode = sys.argv[1]
    if mode == "import":
        parquet, folder = sys.argv[2:4]
        engine = ClickHouseEngine(f"chdb://{folder}", scratch=Path(folder) / "tmp")
        client = engine.client()
        t0 = time.perf_counter()
        client.command(
            f"CREATE TABLE {engine.db}.raw_users ENGINE = MergeTree ORDER BY tuple() "
            f"AS SELECT * FROM file({ch_string(parquet)}, 'Parquet')"
        )
        print(json.dumps({"seconds": time.perf_counter() - t0}))
        return
    data_dir, folder, name, keys = Path(sys.argv[2]), sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
    engine = ClickHouseEngine(f"chdb://{folder}", scratch=Path(folder) / "tmp")
    query, fmt = _query(data_dir, engine, name, keys, sys.argv[7] if mode == "plain" else None)
    client = engine.client()
    if mode in ("copy", "plain"):
        target = sys.argv[6]
        t0, c0 = time.perf_counter(), time.process_time()
        client.command(
            f"INSERT INTO FUNCTION file({ch_string(target)}, {ch_string(fmt)}) {query}",
            settings={**SETTINGS, "engine_file_truncate_on_insert": 1},
        )
        print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0}))
        return
    rows = int(sys.argv[6])
    target = Path(folder).parent / f"pandas-{name}.out"
    t0 = time.perf_counter()
    df = client.query_df(f"{query} LIMIT {rows}")
    if name == "json":
        df.to_json(target, orient="records", lines=True, force_ascii=False)
    else:
        df.to_csv(target, index=False, quoting=csv.QUOTE_ALL)
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": len(df)}))
    target.unlink()


if __name__ == "__main__":
    main()
