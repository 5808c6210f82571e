"""End-to-end export benchmark: segport against DuckDB's own COPY (the limit) and a hand-written pandas to_csv.

    .venv/bin/python bench/export_bench.py                  # 10M users (make bench)
    .venv/bin/python bench/export_bench.py --users 1000000  # quicker
    .venv/bin/python bench/export_bench.py --engine clickhouse --users 1000000   # ClickHouse (chdb) instead

With ``--engine clickhouse`` the server runs on ClickHouse's engine in process (chdb, in the data dir), and the
limits are ClickHouse's own: the same query written into a file by ClickHouse (``INSERT INTO FUNCTION file``),
pandas on that query, and ClickHouse loading the Parquet file (bench/clickhouse_raw.py, each its own process).

What it does, in one run:
1. generates N users (12 keys: Chinese names and cities, ints, doubles, dates, a multi-valued id, ~10% nulls)
   and a small project of 20k users, imports both with `segport users import`, and creates a segment of about
   half of each (`usr_age <= 41`): the small one has ~10k members. The data dir is kept in bench/out/ and
   reused by later runs with the same sizes (`--fresh` rebuilds it).
2. times pandas (`.df()` then `to_csv` / `to_json`) on a sample of at most `--pandas-rows` rows, scaled.
3. starts a real `segport serve` and, through its HTTP API: 20 small (~10k-member) exports one after another
   (median submit→FINISH), then csv+key, csv+name and json exports of the big segment (submit→FINISH; the
   first of each downloaded and row-counted), each `--repeat` times, alternating with two limits written
   directly by DuckDB `COPY`, each in its own process with default settings, on a copy of the file since the
   server holds the original: the same query segport runs, and the same columns read from the plain users
   table with `WHERE usr_age <= 41` (what a user would write by hand; target: segport ≤ 1.25× it). Wall time
   and CPU seconds (all threads of a process) are both compared: on a shared machine the CPU ratio is the
   steadier figure. Then bench/load.py with 200 clients submitting and polling while another big export
   runs. A thread samples the RSS of the server's whole process tree (supervisor, API processes, engine
   process: summed) throughout, and CPU seconds are the tree's too. `--big-only` runs the big exports and
   their limits alone; `--concurrency` runs only the concurrency case (bench/concurrency_case.py: two exports
   and 40 member pages at once on 3M users, default settings).
4. prints the tables, and writes them as JSON to bench/out/results-<N>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import httpx
import psutil

from segport.app import open_stores
from segport.demo import CATALOG, generate_users
from segport.domain.export import build_spec, columns_of
from segport.engine.base import Target
from segport.engine.duckdb.engine import export_query, filtered_query
from segport.settings import Settings

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
BIG, SMALL = "BenchBig", "BenchSml"
SEGMENT, SMALL_SEGMENT = "seg_half", "seg_small"
SMALL_USERS = 20_000
EXTRA = [("usr_phone", "手机号", "string"), ("usr_last_active", "最近活跃日期", "date")]
KEYS = [k for k, _, _ in CATALOG + EXTRA]
RULE = json.dumps({"key": "usr_age", "op": "lte", "value": 41})
PLAIN_WHERE = "u.usr_age <= 41"  # the segment's rule as a user would write it by hand
FORMATS = {  # name -> (fileFormat, csvHeaderType)
    "csv+key": ("csv", "key"),
    "csv+name": ("csv", "name"),
    "json": ("json", None),
}
ENGINE = "duckdb"  # set from --engine
TARGETS = {"csv_ratio": 1.25, "json_ratio": 1.5, "plain_ratio": 1.25, "rss_mb": 500, "small_s": 0.5, "p99_ms": 50}


# --- data ------------------------------------------------------------------------------------------
def generate(path: Path, users: int) -> None:
    """The demo's users plus two more keys: a phone number and a last-active date (both ~10% null)."""
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        base = Path(tmp) / "base.parquet"
        generate_users(base, users)
        con = duckdb.connect()
        try:
            # the demo pads ids to 7 digits; 8 keep them unique up to 99,999,999 users
            con.execute(
                f"""COPY (SELECT * EXCLUDE (file_row_number) REPLACE (
                        'C' || lpad(CAST(file_row_number + 1 AS VARCHAR), 8, '0') AS "id_$basic_userId"),
                    CASE WHEN hash(file_row_number, 7) % 10 = 0 THEN NULL
                         ELSE '1' || (30 + hash(file_row_number, 3) % 60)::VARCHAR
                              || lpad((hash(file_row_number, 5) % 100000000)::VARCHAR, 8, '0') END AS usr_phone,
                    CASE WHEN hash(file_row_number, 11) % 10 = 0 THEN NULL
                         ELSE DATE '2026-11-01' - CAST(hash(file_row_number, 13) % 400 AS INT) END AS usr_last_active
                FROM read_parquet('{base}', file_row_number = true) ORDER BY file_row_number)
                TO '{path}' (FORMAT PARQUET)"""
            )
        finally:
            con.close()


def cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(data_dir), *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"segport {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def members_of(created: str) -> int:
    # "created segment seg_half (半数用户): 4903511 users"
    return int(created.rsplit(":", 1)[1].split()[0])


def prepare(data_dir: Path, users: int, fresh: bool) -> dict:
    """Build (or reuse) the data dir: two projects, their users, their segments, one token."""
    info_path = data_dir / "bench.json"
    if not fresh and info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("users") == users:
            print(f"reusing {data_dir} (pass --fresh to rebuild)")
            return info
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    info: dict = {"users": users}
    catalog = data_dir / "catalog.csv"
    catalog.write_text("key,name,type\n" + "".join(f"{k},{n},{t}\n" for k, n, t in CATALOG + EXTRA), encoding="utf-8")
    for project, n, segment, seg_name in (
        (BIG, users, SEGMENT, "半数用户"),
        (SMALL, SMALL_USERS, SMALL_SEGMENT, "小群体"),
    ):
        parquet = OUT / f"users-{n}.parquet"
        if fresh or not parquet.exists():
            t0 = time.perf_counter()
            generate(parquet, n)
            print(f"generated {n:,} users in {time.perf_counter() - t0:.1f}s")
        cli(data_dir, "project", "create", project, "--name", f"基准{project}")
        cli(data_dir, "catalog", "import", "--project", project, str(catalog))
        t0 = time.perf_counter()
        imported = cli(data_dir, "users", "import", "--project", project, str(parquet)).strip()
        print(imported)
        info[f"users_{project}"] = int(imported.split(" users inserted")[0].rsplit(" ", 1)[1])
        info[f"import_s_{project}"] = round(time.perf_counter() - t0, 2)
        if project == BIG:
            info["import_limit_s"] = round(import_limit(parquet, data_dir), 2)
        created = cli(
            data_dir, "segment", "create", "--project", project, "--key", segment, "--name", seg_name, "--rule", RULE
        )
        print(created.strip())
        info[f"members_{project}"] = members_of(created)
    info["token"] = (
        cli(data_dir, "token", "create", "--project", BIG, "--project", SMALL, "--label", "bench")
        .strip()
        .splitlines()[-1]
    )
    info_path.write_text(json.dumps(info, indent=2))
    return info


# --- the limits: DuckDB COPY and pandas, on the same file, with the server stopped --------------------
def keys_for(rep: int) -> list[str]:
    """The keys of repetition ``rep``, rotated: a distinct job each time (identical ones are deduplicated)."""
    return KEYS[rep % len(KEYS) :] + KEYS[: rep % len(KEYS)]


def direct_queries(data_dir: Path, db: Path, keys: list[str], *, plain: bool = False) -> dict[str, tuple[str, str]]:
    """The exact SELECT (and COPY options) segport runs for each format, built by segport's own code; with
    ``plain``, the same columns read from the users table with ``WHERE usr_age <= 41`` instead of the
    segment's membership (the same rows: the segment was computed from that rule)."""
    stores = open_stores(Settings(data_dir=data_dir))
    try:
        catalog = stores.meta.catalog(BIG)
    finally:
        stores.close()
    con = duckdb.connect(str(db), read_only=True)
    try:
        queries = {}
        for name, (fmt, header) in FORMATS.items():
            spec = build_spec(keys, fmt, header, catalog, 60)
            columns = columns_of(spec, catalog)
            if plain:
                queries[name] = filtered_query(BIG, columns, spec, PLAIN_WHERE)
            else:
                queries[name] = export_query(con.cursor(), BIG, Target("segment", SEGMENT), columns, spec)
        return queries
    finally:
        con.close()


RAW_COPY = """
import sys, time, duckdb
path, query, options, target = sys.argv[1:5]
con = duckdb.connect(path, read_only=True)
con.execute("SET enable_progress_bar = false")
t0, c0 = time.perf_counter(), time.process_time()
con.execute(f"COPY ({query}) TO '{target}' ({options})")
print(time.perf_counter() - t0, time.process_time() - c0)
"""


def raw_copy(db: Path, query: str, options: str, scratch: Path) -> tuple[float, float, float]:
    """DuckDB writing the same query alone in its own process with its default settings (no memory cap): the
    limit. It runs at the niceness of segport's engine process (``engine_nice``, 10 by default): on a quiet
    machine that changes nothing, on one shared with other work a process at niceness 0 gets several times the
    CPU of one at 10, which would compare the two priorities rather than the two exports.
    Returns (seconds, CPU seconds of all its threads, the process's peak RSS in MB)."""
    target = scratch / "raw.out"
    nice = Settings().engine_nice  # the engine process's niceness (segport serve), so both get the same share
    niced = ["nice", "-n", str(nice)] if nice and shutil.which("nice") else []  # every thread of it, from its start
    proc = subprocess.Popen(
        [*niced, sys.executable, "-c", RAW_COPY, str(db), query, options, str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    rss = RssSampler(proc.pid)
    rss.start()
    stdout, _ = proc.communicate()
    rss.stop()
    if proc.returncode != 0:
        raise SystemExit("raw COPY failed")
    target.unlink()
    seconds, cpu = stdout.split()
    return float(seconds), float(cpu), rss.peak_seen()


def import_limit(parquet: Path, data_dir: Path) -> float:
    """The engine loading the same Parquet file into a table by itself, in its own process: the import's limit."""
    scratch = data_dir.parent / f"import-limit-{ENGINE}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        if ENGINE == "clickhouse":
            args = [str(HERE / "clickhouse_raw.py"), "import", str(parquet), str(scratch / "chdb")]
            return float(json.loads(_run(args))["seconds"])
        code = (
            "import sys, time, duckdb; con = duckdb.connect(sys.argv[2]); t0 = time.perf_counter(); "
            "con.execute(f\"CREATE TABLE t AS SELECT * FROM read_parquet('{sys.argv[1]}')\"); "
            "print(time.perf_counter() - t0)"
        )
        return float(_run(["-c", code, str(parquet), str(scratch / "t.duckdb")]).strip())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(args: list[str]) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def clickhouse_limit(
    data_dir: Path, chdb_copy: Path, name: str, keys: list[str], scratch: Path, *, plain: bool = False
) -> tuple[float, float, float]:
    """ClickHouse writing the export's query (with ``plain``: the same columns from the users table with
    ``WHERE usr_age <= 41``) into a file itself, in its own process: (seconds, CPU seconds, peak RSS MB)."""
    target = scratch / "raw.out"
    args = ["plain" if plain else "copy", str(data_dir), str(chdb_copy), name, json.dumps(keys), str(target)]
    args += [PLAIN_WHERE] if plain else []
    proc = subprocess.Popen([sys.executable, str(HERE / "clickhouse_raw.py"), *args], stdout=subprocess.PIPE, text=True)
    rss = RssSampler(proc.pid)
    rss.start()
    stdout, _ = proc.communicate()
    rss.stop()
    if proc.returncode != 0:
        raise SystemExit("raw ClickHouse export failed")
    target.unlink(missing_ok=True)
    out = json.loads(stdout.strip().splitlines()[-1])
    return float(out["seconds"]), float(out["cpu"]), rss.peak_seen()


def clickhouse_pandas(data_dir: Path, chdb_copy: Path, rows: int) -> dict[str, float]:
    rates = {}
    for name in FORMATS:
        args = [str(HERE / "clickhouse_raw.py"), "pandas", str(data_dir), str(chdb_copy), name, json.dumps(KEYS)]
        out = json.loads(_run([*args, str(rows)]))
        rates[name] = out["rows"] / out["seconds"]
    return rates


def time_pandas(db: Path, queries: dict[str, tuple[str, str]], scratch: Path, rows: int) -> dict[str, float]:
    """What a user writes by hand: the query into a DataFrame, then to_csv / to_json. Returns rows/s."""
    con = duckdb.connect(str(db), read_only=True)
    rates = {}
    try:
        for name, (query, _) in queries.items():
            target = scratch / f"pandas-{name}.out"
            t0 = time.perf_counter()
            df = con.execute(f"{query} LIMIT {rows}").df()
            if name == "json":
                df.to_json(target, orient="records", lines=True, force_ascii=False)
            else:
                df.to_csv(target, index=False, quoting=csv.QUOTE_ALL)
            rates[name] = len(df) / (time.perf_counter() - t0)
            del df
            target.unlink()
    finally:
        con.close()
    return rates


# --- the server ------------------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """Samples the RSS of a process and all its descendants (summed: `segport serve` is a supervisor, its API
    processes and its engine process) every 20 ms; ``peak()`` returns (and resets) the peak since the last
    call. ``cpu()`` is the CPU seconds of the tree so far (user + system of every live process, plus what
    ended children left in their parents' counters)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self._peak = 0
        self._stop = threading.Event()

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return []

    def rss_now(self) -> int:
        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        return total

    def cpu(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def run(self) -> None:
        while not self._stop.wait(0.02):
            if not self.tree():
                return
            self._peak = max(self._peak, self.rss_now())

    def peak_seen(self) -> float:
        return self._peak / 2**20

    def peak(self) -> float:
        peak, self._peak = self._peak, self.rss_now()
        return peak / 2**20

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Server:
    base: str
    process: subprocess.Popen
    log: Path
    rss: RssSampler = field(init=False)


def start_server(data_dir: Path) -> Server:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = OUT / "server.log"
    env = {**os.environ, "SEGPORT_DATA_DIR": str(data_dir), "SEGPORT_MAX_QUEUED_JOBS_PER_PROJECT": "100000"}
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segport.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early; see {log}")
        try:
            httpx.get(server.base + "/openapi.json", timeout=1)
            server.rss = RssSampler(proc.pid)
            server.rss.start()
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start; see {log}")


def stop_server(server: Server) -> None:
    server.rss.stop()
    server.process.terminate()
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def _server_seconds(result: dict) -> float:
    created = datetime.fromisoformat(result["createdAt"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(result["finishedAt"].replace("Z", "+00:00"))
    return (finished - created).total_seconds()


def export(http: httpx.Client, project: str, segment: str, body: dict, poll_s: float) -> tuple[float, dict]:
    """Submit and poll until FINISH: (seconds from sending the submit to seeing FINISH, job result)."""
    t0 = time.perf_counter()
    r = http.post(f"/v1/api/projects/{project}/segment_profiles/{segment}/export_jobs", json=body)
    r.raise_for_status()
    job = r.json()["id"]
    polls = 0
    while True:
        result = http.get(f"/v1/api/job/result/{job}").json()
        polls += 1
        if result["stage"] == "FINISH":
            result["_polls"] = polls
            return time.perf_counter() - t0, result
        if result["stage"] == "ERROR":
            raise SystemExit(f"export {job} failed: {result}")
        time.sleep(poll_s)


def download_rows(http: httpx.Client, uris: list[str], csv_header: bool) -> int:
    """Stream every file of a job and count its rows (lines, less the header of each CSV part)."""
    rows = 0
    for uri in uris:
        with http.stream("GET", "/download", params={"file": uri}) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes(1 << 20):
                rows += chunk.count(b"\n")
        rows -= 1 if csv_header else 0
    return rows


def body_for(name: str, keys: list[str]) -> dict:
    fmt, header = FORMATS[name]
    return {"properties": keys, "fileFormat": fmt, **({"csvHeaderType": header} if header else {})}


def run_small(http: httpx.Client, rss: RssSampler, runs: int) -> dict:
    """``runs`` distinct exports of the ~10k-member segment, one after another."""
    client_s, server_s = [], []
    for i in range(runs):
        keys = KEYS[i % len(KEYS) :] + KEYS[: i % len(KEYS)]  # rotated: a distinct job each time
        name = "csv+key" if i % 2 == 0 else "json"
        body = body_for(name, keys)
        seconds, result = export(http, SMALL, SMALL_SEGMENT, body, poll_s=0.005)
        client_s.append(seconds)
        server_s.append(_server_seconds(result))
    rows = download_rows(http, result["uris"], csv_header=name != "json")
    return {
        "runs": runs,
        "median_s": statistics.median(client_s),
        "server_median_s": statistics.median(server_s),
        "max_s": max(client_s),
        "rows": result["rows"],
        "downloaded_rows": rows,
        "peak_rss_mb": rss.peak(),
    }


def run_big(
    http: httpx.Client, rss: RssSampler, members: int, data_dir: Path, db_copy: Path, scratch: Path, repeat: int
) -> dict:
    """Each format ``repeat`` times, alternating DuckDB's COPY of segport's own query, DuckDB's COPY from the
    plain users table with a hand-written ``WHERE`` (both on a copy of the file: the server holds the original,
    each in its own process) and segport, so that all three see the same machine; medians are compared.
    CPU seconds (all threads of the process) are compared too: unlike wall time, they hardly move when other
    work shares the cores."""
    out = {}
    cpu_of = rss.cpu  # the whole tree: since the API/engine split the supervisor alone does none of the work
    poll_cpu = _poll_cpu(http, cpu_of)
    print(f"  server CPU per poll: {poll_cpu * 1000:.2f} ms (taken off segport's CPU below)")
    for name in FORMATS:
        runs: dict[str, list[float]] = {
            k: [] for k in ("segport", "server", "cpu", "copy", "copy_cpu", "copy_rss", "plain", "plain_cpu", "rss")
        }
        for rep in range(repeat):
            if ENGINE == "clickhouse":  # its own limit
                seconds, cpu, copy_rss = clickhouse_limit(data_dir, db_copy, name, keys_for(rep), scratch)
            else:
                query, options = direct_queries(data_dir, db_copy, keys_for(rep))[name]
                seconds, cpu, copy_rss = raw_copy(db_copy, query, options, scratch)
            runs["copy"].append(seconds)
            runs["copy_cpu"].append(cpu)
            runs["copy_rss"].append(copy_rss)
            if ENGINE == "clickhouse":  # ClickHouse's own write of the plain users table with the WHERE
                seconds, cpu, _ = clickhouse_limit(data_dir, db_copy, name, keys_for(rep), scratch, plain=True)
            else:
                query, options = direct_queries(data_dir, db_copy, keys_for(rep), plain=True)[name]
                seconds, cpu, _ = raw_copy(db_copy, query, options, scratch)
            runs["plain"].append(seconds)
            runs["plain_cpu"].append(cpu)
            rss.peak()
            before = cpu_of()
            seconds, result = export(http, BIG, SEGMENT, body_for(name, keys_for(rep)), poll_s=0.05)
            after = cpu_of()
            runs["cpu"].append(after - before - result["_polls"] * poll_cpu)
            runs["rss"].append(rss.peak())
            runs["segport"].append(seconds)
            runs["server"].append(_server_seconds(result))
            if rep == 0:  # download and count once per format
                rows = download_rows(http, result["uris"], csv_header=name != "json")
                if rows != members or result["rows"] != members:
                    raise SystemExit(
                        f"{name}: {rows} rows downloaded, job says {result['rows']}, segment has {members}"
                    )
            print(
                f"  {name} #{rep + 1}: segport {runs['segport'][-1]:.2f}s (CPU {runs['cpu'][-1]:.2f}s), "
                f"COPY {runs['copy'][-1]:.2f}s, plain COPY ... WHERE {runs['plain'][-1]:.2f}s "
                f"(CPU {runs['plain_cpu'][-1]:.2f}s)"
            )
        med = {k: statistics.median(v) for k, v in runs.items()}
        out[name] = {
            "seconds": med["segport"],
            "cpu_seconds": med["cpu"],
            "copy_seconds": med["copy"],
            "copy_cpu_seconds": med["copy_cpu"],
            "plain_seconds": med["plain"],
            "plain_cpu_seconds": med["plain_cpu"],
            "server_seconds": med["server"],
            "rows": members,
            "bytes": result["bytes"],
            "peak_rss_mb": max(runs["rss"]),
            "copy_peak_rss_mb": max(runs["copy_rss"]),
            "runs": runs,
        }
    return out


def _poll_cpu(http: httpx.Client, cpu_of: Callable[[], float], polls: int = 200) -> float:
    """The server's CPU seconds per job-result poll: the bench's own polling while a big export runs is
    counted in the server's CPU, not in the export's."""
    seconds, result = export(http, SMALL, SMALL_SEGMENT, body_for("csv+key", KEYS[:2]), poll_s=0.01)
    before = cpu_of()
    for _ in range(polls):
        http.get(f"/v1/api/job/result/{result['id']}").raise_for_status()
    after = cpu_of()
    return (after - before) / polls


def run_load(server: Server, http: httpx.Client, token: str, clients: int, max_seconds: float, poll_s: float) -> dict:
    """bench/load.py in its own process while a big export (a distinct one) runs."""
    server.rss.peak()
    r = http.post(
        f"/v1/api/projects/{BIG}/segment_profiles/{SEGMENT}/export_jobs", json=body_for("csv+key", list(reversed(KEYS)))
    )
    r.raise_for_status()
    job = r.json()["id"]
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "load.py"),
            "--base",
            server.base,
            "--token",
            token,
            "--project",
            SMALL,
            "--segment",
            SMALL_SEGMENT,
            "--clients",
            str(clients),
            "--max-seconds",
            str(max_seconds),
            "--poll-interval",
            str(poll_s),
            "--watch-job",
            job,
        ],
        capture_output=True,
        text=True,
        timeout=max_seconds + 120,
    )
    if done.returncode != 0:
        raise SystemExit(f"load.py failed:\n{done.stderr}")
    load = json.loads(done.stdout.strip().splitlines()[-1])
    while (result := http.get(f"/v1/api/job/result/{job}").json())["stage"] not in ("FINISH", "ERROR"):
        time.sleep(0.2)
    load["big_export_stage"] = result["stage"]
    load["big_export_server_seconds"] = _server_seconds(result) if result.get("finishedAt") else None
    load["peak_rss_mb"] = server.rss.peak()
    return load


# --- report ----------------------------------------------------------------------------------------
def report(r: dict) -> str:
    members = r["members"]
    lines = [
        f"segport export bench: {r['users_imported']:,} users, segment of {members:,} members, {len(KEYS)} keys + gio_id; "
        f"{os.cpu_count()} cores",
        f"engine: {r.get('engine', 'duckdb')}; import: {r['import_s']:.1f}s through `segport users import`; "
        + (
            f"the engine loading the same Parquet file itself: {r['import_limit_s']:.1f}s "
            f"(ratio {r['import_s'] / r['import_limit_s']:.2f})"
            if r.get("import_limit_s")
            else "(no import limit measured: the data dir was reused; --fresh measures it)"
        ),
        "",
        f"{'format':<9} {'segport s':>9} {'rows/s':>11} {'COPY s':>7} {'vs COPY':>8} {'pandas rows/s':>14} "
        f"{'vs pandas':>10} {'segport RSS MB':>15} {'COPY RSS MB':>12}",
    ]
    for name, b in r["big"].items():
        raw = b["copy_seconds"]
        rate = members / b["seconds"]
        pandas = r["pandas_rows_per_s"][name]
        lines.append(
            f"{name:<9} {b['seconds']:>9.2f} {rate:>11,.0f} {raw:>7.2f} {b['seconds'] / raw:>8.2f} {pandas:>14,.0f} "
            f"{rate / pandas:>9.1f}x {b['peak_rss_mb']:>15.0f} {b['copy_peak_rss_mb']:>12.0f}"
        )
    lines += [
        "",
        f"against DuckDB's COPY from the plain users table with WHERE {PLAIN_WHERE} (target ≤ "
        f"{TARGETS['plain_ratio']}×), {r['users']:,} users:",
        f"{'format':<9} {'segport s':>9} {'plain s':>8} {'ratio':>6} {'target':>7}  "
        f"{'segport CPU s':>13} {'plain CPU s':>11} {'CPU ratio':>9}",
    ]
    for name, b in r["big"].items():
        ratio = b["seconds"] / b["plain_seconds"]
        met = "met" if ratio <= TARGETS["plain_ratio"] else f"+{ratio / TARGETS['plain_ratio'] - 1:.0%}"
        lines.append(
            f"{name:<9} {b['seconds']:>9.2f} {b['plain_seconds']:>8.2f} {ratio:>6.2f} {met:>7}  "
            f"{b['cpu_seconds']:>13.2f} {b['plain_cpu_seconds']:>11.2f} {b['cpu_seconds'] / b['plain_cpu_seconds']:>9.2f}"
        )
    if r["load"] is None:
        lines.append(f"(no small-job or load runs: --big-only); load average at the end {os.getloadavg()[0]:.1f}")
        return "\n".join(lines)
    s, load = r["small"], r["load"]
    ms = {
        k: "-" if load[k] is None else f"{load[k]:.1f}"
        for k in ("submit_p50_ms", "submit_p99_ms", "poll_p50_ms", "poll_p99_ms")
    }
    big_peak = max(b["peak_rss_mb"] for b in r["big"].values())
    lines += [
        "",
        f"small jobs ({r['small_members']:,} members): median submit→FINISH {s['median_s'] * 1000:.0f} ms "
        f"(server-side {s['server_median_s'] * 1000:.0f} ms, max {s['max_s'] * 1000:.0f} ms) over {s['runs']} runs",
        f"server RSS: idle {r['idle_rss_mb']:.0f} MB; peak {s['peak_rss_mb']:.0f} MB exporting {r['small_members']:,} "
        f"members ({SMALL_USERS:,} users); peak {big_peak:.0f} MB exporting {members:,} members "
        f"({r['users']:,} users); peak {load['peak_rss_mb']:.0f} MB under load",
        f"load: {load['clients']} clients (polling every ~{r['poll_interval_s']}s) for {load['seconds']:.0f}s ({load['stopped']}) while a {members:,}-row "
        f"export ran: {load['requests']:,} requests; submit p50 {ms['submit_p50_ms']} ms p99 "
        f"{ms['submit_p99_ms']} ms; poll p50 {ms['poll_p50_ms']} ms p99 {ms['poll_p99_ms']} ms; "
        f"429s {load['too_many_429']}, errors {load['errors']}",
        f"pandas: timed on {r['pandas_rows']:,} rows and scaled (rows/s); COPY: the engine alone in its own process "
        f"writing the same query (DuckDB COPY / ClickHouse INSERT INTO FUNCTION file), default settings, on a copy "
        f"of the data; times are medians of {r['repeat']} alternating runs",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--users", type=int, default=None, help="Users in the big project (default 10M; 3M with --concurrency)."
    )
    p.add_argument("--fresh", action="store_true", help="Rebuild the data dir even if one of this size exists.")
    p.add_argument("--pandas-rows", type=int, default=1_000_000, help="Rows pandas is timed on (then scaled).")
    p.add_argument("--small-runs", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3, help="Runs of each big export (and of its COPY); medians.")
    p.add_argument("--clients", type=int, default=200, help="Concurrent clients in the load run.")
    p.add_argument("--load-seconds", type=float, default=60, help="Upper bound of the load run.")
    p.add_argument("--poll-interval", type=float, default=1.0, help="Mean seconds between a load client's polls.")
    p.add_argument(
        "--big-only", action="store_true", help="Only the big exports and their limits (no pandas, small jobs or load)."
    )
    p.add_argument("--engine", choices=["duckdb", "clickhouse"], default="duckdb", help="Profile engine.")
    p.add_argument(
        "--concurrency",
        action="store_true",
        help="Only the concurrency case (bench/concurrency_case.py): two exports and 40 member pages at once.",
    )
    args = p.parse_args()
    if args.concurrency:
        import concurrency_case  # beside this file

        os.environ["SEGPORT_ENGINE"] = args.engine
        OUT.mkdir(exist_ok=True)
        done = concurrency_case.run(OUT, args.users or 3_000_000, args.fresh, cli, start_server, stop_server)
        (OUT / f"concurrency-{done['users']}.json").write_text(json.dumps(done, indent=2))
        print()
        print(concurrency_case.report(done))
        return
    args.users = args.users or 10_000_000

    global ENGINE
    ENGINE = args.engine
    os.environ["SEGPORT_ENGINE"] = ENGINE  # the CLI, the server and direct_queries read it
    OUT.mkdir(exist_ok=True)
    data_dir = OUT / (f"data-{args.users}" if ENGINE == "duckdb" else f"data-{ENGINE}-{args.users}")
    info = prepare(data_dir, args.users, args.fresh)
    members = info[f"members_{BIG}"]
    scratch = OUT / "scratch"
    scratch.mkdir(exist_ok=True)

    pandas_rows = min(args.pandas_rows, members)
    pandas = dict.fromkeys(FORMATS, float("nan"))
    if ENGINE == "clickhouse":  # chdb: one process per folder, and the server will hold the original
        db_copy = scratch / "clickhouse-copy"
        shutil.rmtree(db_copy, ignore_errors=True)
        shutil.copytree(data_dir / "clickhouse", db_copy, symlinks=True)  # its tables are relative links
        if not args.big_only:
            print(f"timing pandas on {pandas_rows:,} rows…")
            pandas = clickhouse_pandas(data_dir, db_copy, pandas_rows)
    else:
        db_copy = scratch / "profiles-copy.duckdb"
        shutil.copyfile(data_dir / "profiles.duckdb", db_copy)
    if ENGINE == "duckdb" and not args.big_only:
        print(f"timing pandas on {pandas_rows:,} rows…")
        pandas = time_pandas(db_copy, direct_queries(data_dir, db_copy, KEYS), scratch, pandas_rows)

    print("starting segport serve…")
    shutil.rmtree(data_dir / "results", ignore_errors=True)  # earlier runs' results would be deduplicated
    _forget_jobs(data_dir)
    server = start_server(data_dir)
    try:
        with httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {info['token']}"}, timeout=600
        ) as http:
            time.sleep(0.5)
            idle = server.rss.peak()
            small = load = None
            if not args.big_only:
                print(f"small exports ×{args.small_runs}…")
                small = run_small(http, server.rss, args.small_runs)
            print(f"big exports ({members:,} rows), each format {args.repeat}× against DuckDB's COPY…")
            big = run_big(http, server.rss, members, data_dir, db_copy, scratch, args.repeat)
            if not args.big_only:
                print(f"load: {args.clients} clients while a big export runs…")
                load = run_load(server, http, info["token"], args.clients, args.load_seconds, args.poll_interval)
    finally:
        stop_server(server)
        if db_copy.is_dir():
            shutil.rmtree(db_copy, ignore_errors=True)
        else:
            db_copy.unlink()
        shutil.rmtree(data_dir / "results", ignore_errors=True)  # gigabytes of exports nobody will read

    results = {
        "users": args.users,
        "users_imported": info.get(f"users_{BIG}", args.users),
        "members": members,
        "small_members": info[f"members_{SMALL}"],
        "import_s": info[f"import_s_{BIG}"],
        "import_limit_s": info.get("import_limit_s", 0.0),
        "engine": ENGINE,
        "repeat": args.repeat,
        "pandas_rows": pandas_rows,
        "pandas_rows_per_s": pandas,
        "idle_rss_mb": idle,
        "small": small,
        "big": big,
        "load": load,
        "poll_interval_s": args.poll_interval,
        "when": datetime.now().isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
    }
    (OUT / f"results-{args.users}.json").write_text(json.dumps(results, indent=2))
    print()
    print(report(results))


def _forget_jobs(data_dir: Path) -> None:
    """Drop the jobs of earlier runs, so that identical requests are exported again, not deduplicated."""
    import sqlite3

    con = sqlite3.connect(data_dir / "meta.sqlite")
    try:
        con.execute("DELETE FROM jobs")
        con.commit()
    finally:
        con.close()


if __name__ == "__main__":
    main()
