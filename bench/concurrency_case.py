"""`export_bench.py --concurrency`: people using segport together at a modest real size, default settings.

N users (default 3M: an id, two strings of 96 and 128 characters, a short string, an int), one segment of all of
them. Through a real `segport serve`: two exports submitted back to back (``usr_a, usr_b, usr_c`` as JSON, and
the same plus ``usr_n`` as CSV with display names) and, beside them, 40 member pages (``limit=1000``, offsets
0 to 39k) from 20 threads, sent once each (no retries: a 503 is counted as what it is). Prints whether both
exports FINISHed, the pages' statuses (and the count of 5xx, and of 503s with their codes), and the peak RSS of
the server's whole process tree. The data dir is kept in bench/out/ and reused by later runs of the same size.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import httpx

PROJECT, SEGMENT = "BenchCon", "seg_all"
CATALOG = [
    ("id_$basic_userId", "用户ID", "string"),
    ("usr_a", "属性A", "string"),
    ("usr_b", "属性B", "string"),
    ("usr_c", "属性C", "string"),
    ("usr_n", "数值N", "int"),
]
JSON_BODY = {"properties": ["usr_a", "usr_b", "usr_c"], "fileFormat": "json"}
CSV_BODY = {"properties": ["usr_a", "usr_b", "usr_c", "usr_n"], "fileFormat": "csv", "csvHeaderType": "name"}
PAGES, PAGE_LIMIT = 40, 1000


def generate(path: Path, users: int) -> None:
    """The issue's users: an id, strings of 96 and 128 characters, a short string, an int."""
    con = duckdb.connect()
    try:
        con.execute(
            f"""COPY (SELECT 'U' || lpad(CAST(i AS VARCHAR), 9, '0') AS "id_$basic_userId",
                    substr(repeat(md5(CAST(i AS VARCHAR)), 3), 1, 96) AS usr_a,
                    repeat(md5(CAST(i * 7 AS VARCHAR)), 4) AS usr_b,
                    'c' || CAST(i % 1000 AS VARCHAR) AS usr_c,
                    CAST(hash(i) % 100000 AS INTEGER) AS usr_n
                FROM range(1, {users} + 1) t(i)) TO '{path}' (FORMAT PARQUET)"""
        )
    finally:
        con.close()


def prepare(out: Path, users: int, cli: Callable[..., str], fresh: bool) -> tuple[Path, str]:
    data_dir = out / f"data-concurrency-{users}"
    info_path = data_dir / "bench.json"
    if not fresh and info_path.exists() and json.loads(info_path.read_text()).get("users") == users:
        print(f"reusing {data_dir} (pass --fresh to rebuild)")
        return data_dir, json.loads(info_path.read_text())["token"]
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    parquet = out / f"concurrency-users-{users}.parquet"
    if fresh or not parquet.exists():
        t0 = time.perf_counter()
        generate(parquet, users)
        print(f"generated {users:,} users in {time.perf_counter() - t0:.1f}s")
    catalog = data_dir / "catalog.csv"
    catalog.write_text("key,name,type\n" + "".join(f"{k},{n},{t}\n" for k, n, t in CATALOG), encoding="utf-8")
    cli(data_dir, "project", "create", PROJECT, "--name", "并发基准")
    cli(data_dir, "catalog", "import", "--project", PROJECT, str(catalog))
    print(cli(data_dir, "users", "import", "--project", PROJECT, str(parquet)).strip())
    rule = json.dumps({"key": "id_$basic_userId", "op": "not_null"})
    print(cli(data_dir, "segment", "create", "--project", PROJECT, "--key", SEGMENT, "--name", "全部", "--rule", rule))
    token = cli(data_dir, "token", "create", "--project", PROJECT, "--label", "bench").strip().splitlines()[-1]
    info_path.write_text(json.dumps({"users": users, "token": token}))
    return data_dir, token


def run(out: Path, users: int, fresh: bool, cli: Callable[..., str], start: Any, stop: Any) -> dict:
    """The case; ``start(data_dir)`` / ``stop(server)`` are export_bench's (a server with a tree RSS sampler)."""
    data_dir, token = prepare(out, users, cli, fresh)
    shutil.rmtree(data_dir / "results", ignore_errors=True)
    _forget_jobs(data_dir)
    server = start(data_dir)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=server.base, headers=headers, timeout=600) as http:
            time.sleep(0.5)
            server.rss.peak()
            t0 = time.perf_counter()
            jobs = []
            for body in (JSON_BODY, CSV_BODY):
                r = http.post(f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs", json=body)
                r.raise_for_status()
                jobs.append(r.json()["id"])

            def page(i: int) -> tuple[int, str | None, float]:
                p0 = time.perf_counter()
                try:
                    r = http.get(
                        f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/users",
                        params={"limit": PAGE_LIMIT, "offset": i * PAGE_LIMIT},
                    )
                except httpx.HTTPError as exc:
                    return 0, type(exc).__name__, time.perf_counter() - p0
                code = None if r.status_code == 200 else (r.json().get("error") or {}).get("code")
                return r.status_code, code, time.perf_counter() - p0

            with ThreadPoolExecutor(20) as pool:
                pages = list(pool.map(page, range(PAGES)))
            results = {}
            for job in jobs:
                while (res := http.get(f"/v1/api/job/result/{job}").json())["stage"] not in ("FINISH", "ERROR"):
                    time.sleep(0.2)
                results[job] = res
            wall = time.perf_counter() - t0
            peak = server.rss.peak()
    finally:
        stop(server)
        shutil.rmtree(data_dir / "results", ignore_errors=True)
    statuses = collections.Counter(s for s, _, _ in pages)
    codes = collections.Counter(c for s, c, _ in pages if s != 200)
    return {
        "users": users,
        "exports": [
            {"stage": r["stage"], "attempts": r.get("attempts"), "rows": r.get("rows"), "error": r.get("error")}
            for r in results.values()
        ],
        "both_finished": all(r["stage"] == "FINISH" for r in results.values()),
        "page_statuses": dict(statuses),
        "page_codes": dict(codes),
        "pages_5xx": sum(n for s, n in statuses.items() if s >= 500 or s == 0),
        "page_seconds_max": max(t for _, _, t in pages),
        "wall_s": wall,
        "peak_rss_mb": peak,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def report(r: dict) -> str:
    lines = [
        f"concurrency: {r['users']:,} users, one segment of all of them; two exports back to back "
        f"(json: usr_a,usr_b,usr_c; csv+name: + usr_n) and {PAGES} member pages (limit={PAGE_LIMIT}) beside them; "
        f"{r['cores']} cores, load average {r['load_average'][0]:.1f}",
    ]
    for i, e in enumerate(r["exports"], 1):
        lines.append(f"  export {i}: {e['stage']} (attempts {e['attempts']}, rows {e['rows']}) {e['error'] or ''}")
    lines += [
        f"  both exports FINISHed: {'yes' if r['both_finished'] else 'NO'}",
        f"  pages: statuses {r['page_statuses']}, codes {r['page_codes'] or '-'}; 5xx: {r['pages_5xx']}; "
        f"slowest {r['page_seconds_max']:.1f}s",
        f"  all done in {r['wall_s']:.1f}s; peak RSS of the server's process tree {r['peak_rss_mb']:.0f} MB",
    ]
    return "\n".join(lines)


def _forget_jobs(data_dir: Path) -> None:
    import sqlite3

    con = sqlite3.connect(data_dir / "meta.sqlite")
    try:
        con.execute("DELETE FROM jobs")
        con.commit()
    finally:
        con.close()
