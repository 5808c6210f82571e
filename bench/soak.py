"""Soak: 1,000 export jobs submitted in bursts from another process over loopback while imports land.

    python bench/soak.py [--jobs 1000] [--burst 50] [--users 20000] [--import-every-s 1.0]

It builds a demo data dir in a temp folder, starts a server process (the same App and uvicorn as
``segport serve``, plus a thread that upserts a batch of users every ``--import-every-s`` through the same
import service the CLI uses), then from this process submits ``--jobs`` exports in bursts of ``--burst``
concurrent requests, each with a random set of properties and format. A 429 is retried after its
``Retry-After`` (and counted). It then waits until every accepted job is FINISH or ERROR and checks:

* every job ended FINISH, none was lost (every accepted id reached a final stage) and none ran twice
  (``attempts == 1``); identical requests that were answered with an existing job are counted, not lost;
  except ``--cancel-share`` of each burst, cancelled at a random moment (queued or mid-export), which must end
  ERROR with ``JOB_CANCELLED``; the server cuts exports into ``--chunk-rows`` chunks, so every export
  streams through the FIFO pump and the open-files check covers its failure paths;
* a sample of files downloads with one line per row (plus the CSV header);
* the server's memory (RSS) and open file count return to their starting level, measured after a warm-up
  burst at the same concurrency (so connection pools have reached their working size) and again after the
  run once the server is idle. Open files other than the metadata pool's must come back within 2 (the pool
  may keep up to its size open); RSS within 25 % + 30 MB (allocator and DuckDB caches do not hand every page
  back).

It prints its figures and exits non-zero if a check fails. It is not part of ``make test``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from segport.settings import Settings

PROJECT = "WlGk4Daj"
SEGMENT = "seg_51activity"
KEYS = [
    "id_$basic_userId",
    "id_$anonymous_user",
    "usr_gender",
    "usr_name",
    "usr_city",
    "usr_age",
    "usr_member_since",
    "usr_total_spend",
    "tag_rfm",
    "tag_channel",
]


# --- the server process ----------------------------------------------------------------------------
def serve(data_dir: Path, port: int, import_every_s: float, users: int, chunk_rows: int) -> None:
    """Run the API with workers (as `segport serve` does) and land an import every ``import_every_s``."""
    import uvicorn

    from segport.demo import generate_users
    from segport.roles.inline import build, create_app
    from segport.settings import Settings

    app = build(Settings(data_dir=data_dir, host="127.0.0.1", port=port))
    if chunk_rows:  # small chunks: every export streams through the FIFO pump, the path that could leak
        app.engine.chunk_rows = chunk_rows  # type: ignore[attr-defined]
        app.engine.one_scan = False  # type: ignore[attr-defined]  # the chunked writer, not one scan
    stop = threading.Event()

    def importer() -> None:
        batch = data_dir.parent / "batch.parquet"
        n = 0
        while not stop.wait(import_every_s):
            n += 1
            # upserts 500 existing users (ids C0000001..) with new values: a new data snapshot each time
            generate_users(batch, min(users, 500), seed=1000 + n)
            app.data.import_users(PROJECT, batch)
            (data_dir.parent / "imports.txt").write_text(str(n))

    threading.Thread(target=importer, name="soak-importer", daemon=True).start()
    try:
        uvicorn.run(create_app(app), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        stop.set()
        app.close()


# --- the load generator ----------------------------------------------------------------------------
def server_usage(pid: int) -> tuple[float, int]:
    """(RSS in MB, open file descriptors) of the server process."""
    proc = psutil.Process(pid)
    return proc.memory_info().rss / 1e6, proc.num_fds()


def fd_kinds(pid: int) -> dict[str, int]:
    """The server's open descriptors by kind (socket, pipe, file type), to explain a difference."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":")[0] if ":" in target else (Path(target).suffix or target)
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def build_data(data_dir: Path, users: int) -> str:
    from segport.demo import build_demo
    from segport.roles.inline import build
    from segport.settings import Settings

    app = build(Settings(data_dir=data_dir))
    try:
        return build_demo(app, users)
    finally:
        app.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def random_body(rng: random.Random) -> dict:
    body: dict = {"properties": rng.sample(KEYS, rng.randint(0, len(KEYS)))}
    body["fileFormat"] = rng.choice(["csv", "json"])
    if body["fileFormat"] == "csv" and rng.random() < 0.5:
        body["csvHeaderType"] = "name"
    return body


class Load:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.client = httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            limits=httpx.Limits(max_connections=64),
        )
        self.lock = threading.Lock()
        self.accepted: dict[str, float] = {}  # job id -> submit time
        self.deduped = 0
        self.too_many = 0
        self.resubmitted = 0
        self.transport_errors: list[str] = []
        self.errors: list[str] = []
        self.cancelled: set[str] = set()

    def cancel_later(self, job_ids: list[str], delay_s: float) -> None:
        time.sleep(delay_s)
        for job_id in job_ids:
            try:
                r = self.client.post(f"/v1/api/job/{job_id}/cancel")
            except httpx.TransportError as exc:
                with self.lock:
                    self.transport_errors.append(repr(exc))
                continue
            if r.status_code == 200:
                with self.lock:
                    self.cancelled.add(job_id)
            elif r.status_code != 409:  # 409: it had finished first
                with self.lock:
                    self.errors.append(f"cancel {r.status_code}: {r.text[:200]}")

    def submit(self, body: dict) -> None:
        url = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
        for _ in range(200):
            try:
                r = self.client.post(url, json=body)
            except httpx.TransportError as exc:
                # a keep-alive connection the server closed as we reused it: resubmit (identical requests
                # are answered with the same job, so a retry never makes a second one)
                with self.lock:
                    self.resubmitted += 1
                    self.transport_errors.append(repr(exc))
                time.sleep(0.1)
                continue
            if r.status_code == 429:
                with self.lock:
                    self.too_many += 1
                time.sleep(float(r.headers.get("retry-after", "1")))
                continue
            if r.status_code != 200:
                with self.lock:
                    self.errors.append(f"submit {r.status_code}: {r.text[:200]}")
                return
            job_id = r.json()["id"]
            with self.lock:
                if job_id in self.accepted:
                    self.deduped += 1
                else:
                    self.accepted[job_id] = time.monotonic()
            return
        with self.lock:
            self.errors.append("submit: still 429 after 200 tries")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=50)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--import-every-s", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument(
        "--cancel-share", type=float, default=0.1, help="share of each burst's jobs cancelled at a random moment"
    )
    ap.add_argument("--chunk-rows", type=int, default=1000, help="export chunk size in the server (0: default)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    ap.add_argument("--serve", nargs=2, metavar=("DATA_DIR", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]), args.import_every_s, args.users, args.chunk_rows)
        return 0

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="segport-soak-"))
    data_dir = tmp / "data"
    print(f"building {args.users} users in {data_dir} …", flush=True)
    token = build_data(data_dir, args.users)
    port = free_port()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(data_dir),
            str(port),
            "--import-every-s",
            str(args.import_every_s),
            "--users",
            str(args.users),
            "--chunk-rows",
            str(args.chunk_rows),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    failures: list[str] = []
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(base + "/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        load = Load(base, token)

        # warm-up: one full burst at the run's concurrency (so pools reach their working size), then the
        # baseline; what the run adds on top of that is what must go away again
        warm = Load(base, token)
        with cf.ThreadPoolExecutor(args.burst) as pool:
            list(pool.map(warm.submit, [random_body(rng) for _ in range(args.burst)]))
        wait_all(warm, set(warm.accepted), timeout=300)
        warm.client.close()  # measure the server alone, with no client connection open
        time.sleep(2)
        rss0, fds0 = server_usage(server.pid)
        kinds0 = fd_kinds(server.pid)
        print(f"baseline after warm-up: RSS {rss0:.0f} MB, {fds0} open files {kinds0}", flush=True)

        started = time.monotonic()
        peak_rss, peak_fds = rss0, fds0
        cancellers: list[threading.Thread] = []
        with cf.ThreadPoolExecutor(args.burst) as pool:
            for i in range(0, args.jobs, args.burst):
                bodies = [random_body(rng) for _ in range(min(args.burst, args.jobs - i))]
                before = set(load.accepted)
                list(pool.map(load.submit, bodies))
                fresh = sorted(set(load.accepted) - before)
                doomed = rng.sample(fresh, round(len(fresh) * args.cancel_share))
                # cancels at random moments (queued, opening the FIFO, mid-chunk): failures count for the
                # open-files check too
                t = threading.Thread(target=load.cancel_later, args=(doomed, rng.random() * 0.5), daemon=True)
                t.start()
                cancellers.append(t)
                rss, fds = server_usage(server.pid)
                peak_rss, peak_fds = max(peak_rss, rss), max(peak_fds, fds)
                time.sleep(rng.uniform(0.0, 0.5))  # bursts, not a steady stream
        for t in cancellers:
            t.join()
        submitted_s = time.monotonic() - started
        results = wait_all(load, set(load.accepted), timeout=900, peak=(server.pid, [peak_rss, peak_fds]))
        total_s = time.monotonic() - started

        stages: dict[str, int] = {}
        for r in results.values():
            stages[r["stage"]] = stages.get(r["stage"], 0) + 1
        twice = [i for i, r in results.items() if r.get("attempts") != 1 and i not in load.cancelled]
        uncancelled = {i: r for i, r in results.items() if i not in load.cancelled}
        not_cancelled_right = [
            i for i in load.cancelled if results.get(i, {}).get("error", {}).get("code") != "JOB_CANCELLED"
        ]
        lost = set(load.accepted) - set(results)
        latencies = [r["_done"] - load.accepted[i] for i, r in results.items()]
        checked = check_sample(load, results, rng)
        load.client.close()
        time.sleep(3)  # idle: let the last responses and file handles close
        rss1, fds1 = server_usage(server.pid)
        kinds1 = fd_kinds(server.pid)
        imports = (tmp / "imports.txt").read_text() if (tmp / "imports.txt").exists() else "0"

        print(f"jobs requested        {args.jobs} in bursts of {args.burst} (submitted in {submitted_s:.1f} s)")
        print(
            f"jobs created          {len(load.accepted)}; identical requests answered with an existing job: "
            f"{load.deduped}; 429 answers (retried): {load.too_many}"
        )
        print(f"imports landed        {imports}")
        print(
            f"resubmits after a connection reset: {load.resubmitted}"
            + (f" (e.g. {load.transport_errors[0]})" if load.transport_errors else "")
        )
        print(f"final stages          {stages}; lost {len(lost)}; run more than once {len(twice)}")
        print(f"cancelled             {len(load.cancelled)} (the others asked had finished first)")
        print(
            f"submit -> final       p50 {statistics.median(latencies):.2f} s, "
            f"p95 {statistics.quantiles(latencies, n=20)[18]:.2f} s; all done in {total_s:.1f} s "
            f"({len(results) / total_s:.1f} jobs/s)"
        )
        print(f"downloads checked     {checked}")
        print(f"server RSS            start {rss0:.0f} MB, peak {peak_rss:.0f} MB, end {rss1:.0f} MB")
        print(f"server open files     start {fds0}, peak {peak_fds}, end {fds1} {kinds1}")
        if server.poll() is not None:
            failures.append(f"the server exited with {server.returncode}")
        if load.errors:
            failures.append(f"{len(load.errors)} submit errors, e.g. {load.errors[0]}")
        if any(r["stage"] != "FINISH" for r in uncancelled.values()):
            failures.append(f"not every job that was not cancelled finished: {stages}")
        if not_cancelled_right:
            failures.append(f"{len(not_cancelled_right)} cancelled jobs did not end JOB_CANCELLED")
        if lost:
            failures.append(f"{len(lost)} jobs lost")
        if twice:
            failures.append(f"{len(twice)} jobs ran more than once")
        # the metadata pool keeps what it opened at the busiest moment (up to its size): not a leak, and
        # cancels make moments busier than the warm-up; everything else must come back
        others0, others1 = fds0 - _pooled(kinds0), fds1 - _pooled(kinds1)
        if others1 > others0 + 2:
            failures.append(f"open files other than the metadata pool grew from {others0} to {others1}")
        held = {k: n for k, n in kinds1.items() if k in (".fifo", ".csv", ".json", ".gz")}
        if held:
            failures.append(f"export files still open in the server: {held}")
        if kinds1.get(".sqlite", 0) > SQLITE_POOL + 1:
            failures.append(f"{kinds1['.sqlite']} metadata connections open, more than the pool's {SQLITE_POOL}")
        if rss1 > rss0 * 1.25 + 30:
            failures.append(f"memory did not return: {rss0:.0f} MB -> {rss1:.0f} MB")
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    print("OK" if not failures else "FAILED")
    return 1 if failures else 0


# the metadata pool of the server above (built with the default settings): `Settings.resolved_pool_size`
SQLITE_POOL = Settings().resolved_pool_size()


def _pooled(kinds: dict[str, int]) -> int:
    """Descriptors held by pooled SQLite connections (the database, its WAL and shared memory)."""
    return sum(kinds.get(k, 0) for k in (".sqlite", ".sqlite-wal", ".sqlite-shm"))


def wait_all(load: Load, ids: set[str], timeout: float, peak: tuple[int, list[float]] | None = None) -> dict[str, dict]:
    """Poll until every job is FINISH or ERROR; returns their last results (with ``_done`` = when seen)."""
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids) and time.monotonic() < deadline:
        for job_id in sorted(ids - set(done)):
            try:
                r = load.client.get(f"/v1/api/job/result/{job_id}")
            except httpx.TransportError:
                continue  # asked again on the next round
            if r.status_code == 200 and r.json()["stage"] in ("FINISH", "ERROR"):
                done[job_id] = {**r.json(), "_done": time.monotonic()}
        if peak is not None:
            rss, fds = server_usage(peak[0])
            peak[1][0], peak[1][1] = max(peak[1][0], rss), max(peak[1][1], fds)
        time.sleep(0.2)
    return done


def check_sample(load: Load, results: dict[str, dict], rng: random.Random) -> str:
    finished = [r for r in results.values() if r["stage"] == "FINISH"]
    sample = rng.sample(finished, min(40, len(finished)))
    bad = 0
    for r in sample:
        d = load.client.get("/download", params={"file": r["uris"][0]})
        body = gzip.decompress(d.content) if r["uris"][0].endswith(".gz") else d.content
        lines = body.count(b"\n")  # JSON Lines: newlines inside values are escaped
        is_csv = r["uris"][0].endswith(".csv")
        # CSV values may hold newlines inside quotes; count records with the csv module then
        if is_csv:
            import csv
            import io

            lines = sum(1 for _ in csv.reader(io.StringIO(body.decode("utf-8")))) - 1
        if d.status_code != 200 or lines != r["rows"]:
            bad += 1
    if bad:
        load.errors.append(f"{bad} of {len(sample)} sampled downloads had the wrong number of rows")
    return f"{len(sample) - bad}/{len(sample)} sampled files have one record per row"


if __name__ == "__main__":
    sys.exit(main())
