"""A user import on ClickHouse (chdb) against ClickHouse's own load of the same Parquet file, in one process.

    .venv/bin/python bench/clickhouse_import_bench.py [--users 1000000] [--rounds 5]

Generates the export bench's users (bench/export_bench.py: 12 keys, ~10% nulls; reused from bench/out/), opens
one chdb engine in a fresh folder and, ``--rounds`` times, alternately:

* limit: ``CREATE TABLE ... ENGINE = MergeTree ORDER BY tuple() AS SELECT * FROM file(<parquet>, 'Parquet')``
  (ClickHouse loading the file by itself, nothing checked);
* import: segport's ``import_users`` of the same file into a new project (a first load: every row checked,
  every user new), wall time of the whole call;
* re-import: the same file again into that project (every user known: the merge).

Same process, same engine, alternating, so each ratio is taken at one moment of a shared machine; medians are
printed, with the CPU seconds of the process (all of chdb's threads) beside each wall time. Target: the import
≤ 2× the limit.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import export_bench  # noqa: E402  (beside this file)

from segport.domain.keys import Catalog, CatalogEntry, parse_key, parse_type  # noqa: E402
from segport.engine.clickhouse.engine import ClickHouseEngine  # noqa: E402
from segport.engine.clickhouse.sql import ch_string  # noqa: E402


def catalog() -> Catalog:
    entries = []
    for raw, name, type_name in export_bench.CATALOG + export_bench.EXTRA:
        kind, key = parse_key(raw)
        value_type, multi = parse_type(type_name)
        entries.append(CatalogEntry(key, kind, name, value_type, multi))
    return Catalog(entries)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    export_bench.OUT.mkdir(exist_ok=True)
    parquet = export_bench.OUT / f"users-{args.users}.parquet"
    if not parquet.exists():
        export_bench.generate(parquet, args.users)
    work = export_bench.OUT / "clickhouse-import-bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    cat = catalog()
    engine = ClickHouseEngine(f"chdb://{work / 'chdb'}", scratch=work / "tmp")
    client = engine.client()
    runs: dict[str, list[float]] = {"limit": [], "import": [], "reimport": []}
    cpus: dict[str, list[float]] = {k: [] for k in runs}
    try:
        for r in range(args.rounds):
            client.command(f"DROP TABLE IF EXISTS {engine.db}.raw_users")
            c0, t0 = cpu(), time.perf_counter()
            client.command(
                f"CREATE TABLE {engine.db}.raw_users ENGINE = MergeTree ORDER BY tuple() "
                f"AS SELECT * FROM file({ch_string(str(parquet))}, 'Parquet')"
            )
            runs["limit"].append(time.perf_counter() - t0)
            cpus["limit"].append(cpu() - c0)
            project = f"Bench{r:03d}"
            engine.ensure_project(project, cat)
            c0, t0 = cpu(), time.perf_counter()
            report = engine.import_users(project, cat, parquet, "parquet", "id_$basic_userId", [])
            runs["import"].append(time.perf_counter() - t0)
            cpus["import"].append(cpu() - c0)
            assert report.inserted == args.users, report
            c0, t0 = cpu(), time.perf_counter()
            report = engine.import_users(project, cat, parquet, "parquet", "id_$basic_userId", [])
            runs["reimport"].append(time.perf_counter() - t0)
            cpus["reimport"].append(cpu() - c0)
            assert report.updated == args.users, report
            print(
                f"round {r + 1}: limit {runs['limit'][-1]:.2f}s (CPU {cpus['limit'][-1]:.2f}s), "
                f"import {runs['import'][-1]:.2f}s (CPU {cpus['import'][-1]:.2f}s), "
                f"re-import {runs['reimport'][-1]:.2f}s (CPU {cpus['reimport'][-1]:.2f}s)",
                flush=True,
            )
    finally:
        engine.close()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    mcpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(
        f"\n{args.users:,} users, medians of {args.rounds} alternating rounds: ClickHouse's own load {med['limit']:.2f}s; "
        f"segport import {med['import']:.2f}s (ratio {med['import'] / med['limit']:.2f}, target ≤ 2); "
        f"re-import (all updates) {med['reimport']:.2f}s (ratio {med['reimport'] / med['limit']:.2f})"
    )
    print(
        f"CPU medians: limit {mcpu['limit']:.2f}s, import {mcpu['import']:.2f}s "
        f"(ratio {mcpu['import'] / mcpu['limit']:.2f}), re-import {mcpu['reimport']:.2f}s "
        f"(ratio {mcpu['reimport'] / mcpu['limit']:.2f})"
    )


if __name__ == "__main__":
    main()
