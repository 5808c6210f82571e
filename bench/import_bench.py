"""Import benchmark: `segport users import` against a raw DuckDB load of the same file, in the same run.

    .venv/bin/python bench/import_bench.py [--users 10000000] [--csv-users 2000000] [--memory-limit 1GB]

Generates a Parquet file of N users and a CSV file of M users (12 columns: identities incl. a multi-valued
one, strings with Chinese text, ints, doubles, dates), then runs, each as its own process:

* raw:       ``CREATE TABLE t AS SELECT * FROM read_parquet(...)`` into a fresh DuckDB file
* fresh:     ``segport users import`` into an empty project (all inserts)
* reimport:  the same file again (all updates)
* and the same three for the CSV (raw = ``read_csv(..., all_varchar=true)``).

It prints each time, the ratio to the raw load and each process's peak RSS (from ``wait4``). Targets:
fresh <= 2x raw, re-import <= 3x raw, RSS bounded by ``SEGPORT_DUCKDB_MEMORY_LIMIT``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

PROJECT = "Bench001"
CATALOG = """key,name,type
id_$basic_userId,用户ID,string
id_$anonymous_user,匿名用户ID,string[]
usr_gender,性别,string
usr_city,城市,string
usr_age,年龄,int
usr_score,积分,double
usr_since,注册日期,date
usr_level,等级,int
usr_channel,渠道,string
usr_spend,消费,double
tag_rfm,会员等级,string
tag_active,活跃度,string
"""

SELECT = """
SELECT 'U' || lpad(CAST(i AS VARCHAR), 9, '0') AS "id_$basic_userId",
       ['d' || CAST(i AS VARCHAR), 'e' || CAST(i % 1000 AS VARCHAR)] AS "id_$anonymous_user",
       CASE i % 3 WHEN 0 THEN '男' WHEN 1 THEN '女' ELSE NULL END AS usr_gender,
       (['北京', '上海', '广州', '深圳', '杭州', '成都'])[1 + i % 6] || '-' || CAST(i % 97 AS VARCHAR) AS usr_city,
       CAST(18 + i % 60 AS BIGINT) AS usr_age,
       CAST((i % 10000) / 7.0 AS DOUBLE) AS usr_score,
       DATE '2015-01-01' + CAST(i % 3000 AS INTEGER) AS usr_since,
       CAST(i % 10 AS BIGINT) AS usr_level,
       'channel_' || CAST(i % 37 AS VARCHAR) AS usr_channel,
       CAST((i * 7919) % 100000 / 100.0 AS DOUBLE) AS usr_spend,
       (['高', '中', '低'])[1 + i % 3] AS tag_rfm,
       CASE WHEN i % 5 = 0 THEN NULL ELSE 'A' || CAST(i % 4 AS VARCHAR) END AS tag_active
FROM range({n}) r(i)
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run a process; (wall seconds, peak RSS in MB, output)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out}")
    return elapsed, usage.ru_maxrss // 1024, out


RAW = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], config={{"memory_limit": sys.argv[3]}})
con.execute("CREATE TABLE t AS SELECT * FROM {reader}".replace("PATH", sys.argv[2]))
con.close()
"""


def bench(label: str, data: Path, env: dict[str, str], work: Path, reader: str, mem: str) -> None:
    raw_db = work / f"raw_{label}.duckdb"
    code = RAW.format(reader=reader)
    raw_t, raw_rss, _ = run([sys.executable, "-c", code, str(raw_db), str(data), mem], env)
    raw_db.unlink()
    segport = [sys.executable, "-m", "segport.cli", "users", "import", "--project", PROJECT, str(data)]
    fresh_t, fresh_rss, out1 = run(segport, env)
    re_t, re_rss, out2 = run(segport, env)
    print(f"\n{label}: {data.name} ({data.stat().st_size / 1e6:.0f} MB)")
    print(f"  raw DuckDB CTAS          {raw_t:7.2f} s   peak RSS {raw_rss:5d} MB")
    print(f"  segport import (fresh)   {fresh_t:7.2f} s   peak RSS {fresh_rss:5d} MB   ratio {fresh_t / raw_t:4.2f}x")
    print(f"  segport import (re)      {re_t:7.2f} s   peak RSS {re_rss:5d} MB   ratio {re_t / raw_t:4.2f}x")
    print("  " + out1.strip().splitlines()[-1])
    print("  " + out2.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=10_000_000, help="rows of the Parquet file")
    ap.add_argument("--csv-users", type=int, default=2_000_000, help="rows of the CSV file (0: skip)")
    ap.add_argument("--memory-limit", default="", help="SEGPORT_DUCKDB_MEMORY_LIMIT (default: the setting's)")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir, removed)")
    args = ap.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="segport-import-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    from segport.settings import Settings

    settings = Settings()
    mem = args.memory_limit or settings.duckdb_memory_limit or f"{int(settings.engine_memory() * 0.8) >> 20}MiB"
    env = {**os.environ, "SEGPORT_DATA_DIR": str(work / "data"), "SEGPORT_DUCKDB_MEMORY_LIMIT": mem}
    try:
        con = duckdb.connect()
        pq_file = work / "users.parquet"
        t = time.perf_counter()
        con.execute(f"COPY ({SELECT.format(n=args.users)}) TO '{pq_file}' (FORMAT PARQUET)")
        csv_file = work / "users.csv"
        if args.csv_users:
            # the CSV writes the multi-valued identity as a||b, as segport reads it
            sel = SELECT.format(n=args.csv_users).replace(
                "['d' || CAST(i AS VARCHAR), 'e' || CAST(i % 1000 AS VARCHAR)]",
                "'d' || CAST(i AS VARCHAR) || '||e' || CAST(i % 1000 AS VARCHAR)",
            )
            con.execute(f"COPY ({sel}) TO '{csv_file}' (FORMAT CSV, HEADER, FORCE_QUOTE *)")
        con.close()
        print(
            f"generated {args.users} + {args.csv_users} users in {time.perf_counter() - t:.1f}s; "
            f"duckdb_memory_limit={mem}, cores={os.cpu_count()}"
        )
        catalog = work / "catalog.csv"
        catalog.write_text(CATALOG, encoding="utf-8")
        base = [sys.executable, "-m", "segport.cli"]
        run([*base, "project", "create", PROJECT, "--name", "bench"], env)
        run([*base, "catalog", "import", "--project", PROJECT, str(catalog)], env)
        bench("parquet", pq_file, env, work, "read_parquet('PATH')", mem)
        if args.csv_users:
            shutil.rmtree(work / "data")
            run([*base, "project", "create", PROJECT, "--name", "bench"], env)
            run([*base, "catalog", "import", "--project", PROJECT, str(catalog)], env)
            bench("csv", csv_file, env, work, "read_csv('PATH', header=true, all_varchar=true)", mem)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
