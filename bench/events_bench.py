"""Collect throughput: segport's collect endpoint against the HTTP stack's own ceiling, measured in one run.

Two servers, each one process of the same HTTP stack (uvicorn with segport's protocol options, FastAPI, segport's
edge middlewares and error renderer):

* **segport**: `segport serve` with one API process (and its engine process), a project and a data source;
  ``POST /v3/projects/{key}/collect`` checks, normalizes and commits each batch to the spool before its 200;
* **bare**: the same stack with one route at the same path that reads the body and answers 200.

The client runs in a process of its own (``--client``): ``--connections`` keep-alive connections post JSON
batches of ``--events`` events (each request a distinct batch and ``stm``, as an SDK sends them) for
``--seconds``. The targets are measured in turns (bare, segport, bare, segport, ...) for ``--rounds`` rounds and
the median round of each is kept (the machine may be shared: each round's figures are printed too). Prints one
JSON object: requests/s and events/s of each, their ratio, p50/p99 latency, the API process's RSS, the CPU
time the engine process (the loader) took meanwhile, and the batches found in the spool.

Freshness **at this load** (issue 21): after each segport round the bench waits for the loader to drain what the
round left in the spool (``drain_s_per_round``: from the client's last answer to an empty spool), and reads every
accepted batch's time from its 200 (``received_at``) to the engine's commit of its rows (``loaded_at``) at the
end (``freshness``: p50/p99/max seconds). At a load the loader cannot keep up with, that is the backlog's age,
not the loader's interval: docs/events.md, "Freshness".

``--baseline-src DIR`` adds a third target in the same turns: ``segport serve`` run from another source tree
(e.g. ``git worktree add /tmp/main main``), so a change is measured against what it changes in one run.

    .venv/bin/python bench/events_bench.py [--seconds 10] [--connections 8] [--events 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from events_freshness_bench import freshness  # (bench/, this script's directory, is first on sys.path)
from fastapi import FastAPI, Request, Response

P = "Benchev1"


# --- the client (its own process) -------------------------------------------------------------------------
def batch_body(source: str, key: str, seq: int, events: int, now: int) -> bytes:
    return json.dumps(
        [
            {
                "eventType": "CUSTOM",
                "sdkVersion": "1.0.5",
                "platform": "python",
                "timestamp": now - j,
                "eventName": "buy",
                "deviceId": f"dev-{seq % 5000}-{j % 7}",
                "userId": f"u-{(seq * 31 + j) % 100000}",
                "attributes": {"price": str(j * 1.5), "seq": str(seq), "sku": f"sku-{j}", "tags": "a||b"},
                "dataSourceId": source,
                "projectKey": key,
            }
            for j in range(events)
        ],
        separators=(",", ":"),
    ).encode()


async def _connection(
    host: str, port: int, path: str, bodies: list[bytes], deadline: float, lat: list[float], counts: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = 0
    base = int(time.time() * 1000)
    while time.monotonic() < deadline:
        body = bodies[i % len(bodies)]
        stm = base + counts["sent"]
        counts["sent"] += 1
        i += 1
        head = (
            f"POST {path}?stm={stm} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        started = time.perf_counter()
        writer.write(head + body)
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        lat.append((time.perf_counter() - started) * 1000)
        counts["ok" if status_line.split()[1] == b"200" else "error"] += 1
    writer.close()


def client(args: argparse.Namespace) -> None:
    bodies = [batch_body(args.source, args.key, seq, args.events, int(time.time() * 1000)) for seq in range(200)]
    lat: list[float] = []
    counts = {"sent": 0, "ok": 0, "error": 0}

    async def main() -> float:
        started = time.monotonic()
        deadline = started + args.seconds
        await asyncio.gather(
            *(
                _connection(args.host, args.port, args.path, bodies[c :: args.connections], deadline, lat, counts)
                for c in range(args.connections)
            )
        )
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    lat.sort()
    print(
        json.dumps(
            {
                "requests_per_s": round(counts["ok"] / elapsed, 1),
                "events_per_s": round(counts["ok"] * args.events / elapsed),
                "ok": counts["ok"],
                "errors": counts["error"],
                "p50_ms": round(lat[len(lat) // 2], 2) if lat else None,
                "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2) if lat else None,
            }
        )
    )


# --- the bare server (its own process) ----------------------------------------------------------------------
def bare_server(args: argparse.Namespace) -> None:
    from segport.http import errors
    from segport.http.guard import EdgeGuard
    from segport.http.limits import BodyLimit, RequestLineLimit
    from segport.http.protocol import uvicorn_options
    from segport.roles.sockets import listen_socket, serve_asgi
    from segport.settings import Settings

    settings = Settings(data_dir=Path(args.data))
    api = FastAPI()
    errors.install(api)

    @api.post("/v3/projects/{projectKey}/collect")
    async def bare(projectKey: str, request: Request) -> Response:
        await request.body()
        return Response(b'{"accepted":0,"duplicate":false}', media_type="application/json")

    api.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, is_upload=lambda _p: False)
    api.add_middleware(RequestLineLimit)
    api.add_middleware(
        EdgeGuard, read_timeout_s=settings.request_read_timeout_s, is_upload=lambda _p: False, native_head=frozenset()
    )
    serve_asgi(api, sockets=[listen_socket("127.0.0.1", args.port)], **uvicorn_options(settings))


# --- the run -------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early ({proc.returncode})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def run_client(args: argparse.Namespace, port: int, key: str, source: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--client", "--port", str(port), "--key", key, "--source", source]
    cmd += ["--seconds", str(args.seconds), "--connections", str(args.connections), "--events", str(args.events)]
    cmd += ["--path", f"/v3/projects/{key}/collect"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    if done.returncode != 0:
        raise SystemExit(f"the client failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _children(supervisor: int) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The API processes and the engine process of `segport serve` (the one with the DuckDB file open)."""
    api, engine = [], []
    for child in psutil.Process(supervisor).children():
        try:
            files = {Path(f.path).name for f in child.open_files()}
        except psutil.Error:
            continue
        (engine if "profiles.duckdb" in files else api).append(child)
    return api, engine


def api_rss_mb(supervisor: int) -> float:
    """The RSS of the API process: the child of `segport serve` without the DuckDB file open."""
    best = 0.0
    for child in _children(supervisor)[0]:
        try:
            best = max(best, child.memory_info().rss / 2**20)
        except psutil.Error:
            continue
    return round(best, 1)


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def wait_loaded(data: Path, timeout_s: float = 300.0) -> None:
    from segport.app import open_stores
    from segport.settings import Settings
    from segport.store.events import EventSpool

    stores = open_stores(Settings(data_dir=data), migrate=False)
    try:
        spool = EventSpool(stores.db)
        deadline = time.monotonic() + timeout_s
        while spool.pending(1):
            if time.monotonic() > deadline:
                raise SystemExit(f"the loader left batches in the spool {timeout_s:.0f} s after the round")
            time.sleep(0.1)
    finally:
        stores.close()


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(rounds, key=lambda r: r["requests_per_s"])[len(rounds) // 2]


# The editable install finds `segport` with a finder of its own ahead of sys.path: drop it, put the tree first.
_RUN_FROM = (
    "import runpy, sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]; "
    "sys.path.insert(0, {src!r}); "
    "runpy.run_module('segport.cli', run_name='__main__', alter_sys=True)"
)


def start_segport(data: Path, port: int, log: Any, src: str | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SEGPORT_DATA_DIR": str(data), "SEGPORT_API_PROCESSES": "1"}
    run = ["-m", "segport.cli"]
    if src:  # another source tree's segport: the venv's packages, that tree's code (ahead of the editable install)
        run = ["-c", _RUN_FROM.format(src=str(Path(src).resolve()))]
    return subprocess.Popen(
        [sys.executable, *run, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def main(args: argparse.Namespace) -> dict[str, Any]:
    from segport.app import open_stores
    from segport.settings import Settings
    from segport.store.events import DataSources, EventSpool

    base = Path(tempfile.mkdtemp(prefix="events-bench-"))
    data = base / "data"
    stores = open_stores(Settings(data_dir=data))
    stores.meta.create_project(P, "bench")
    key, source = DataSources(stores.db).add(P, "bench")
    stores.close()
    targets = ["bare", "segport"]
    servers: dict[str, subprocess.Popen[bytes]] = {}
    finished = False
    ports = {"bare": free_port(), "segport": free_port()}
    log = open(base / "server.log", "ab")  # noqa: SIM115 - the children's log
    if args.baseline_src:  # a data dir of its own: the same project, key and data source
        shutil.copytree(data, base / "baseline")
        targets.append("baseline")
        ports["baseline"] = free_port()
    servers["segport"] = start_segport(data, ports["segport"], log, None)
    if args.baseline_src:
        servers["baseline"] = start_segport(base / "baseline", ports["baseline"], log, args.baseline_src)
    servers["bare"] = subprocess.Popen(
        [sys.executable, __file__, "--bare-server", "--port", str(ports["bare"]), "--data", str(data)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for name in targets:
            wait_up(f"http://127.0.0.1:{ports[name]}/openapi.json", servers[name])
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        engine_cpu: dict[str, list[float]] = {name: [] for name in targets if name != "bare"}
        drain_s: dict[str, list[float]] = {name: [] for name in targets if name != "bare"}
        for _ in range(args.rounds):
            for name in targets:
                engines = _children(servers[name].pid)[1] if name != "bare" else []
                apis = _children(servers[name].pid)[0] if name != "bare" else [psutil.Process(servers[name].pid)]
                before, api_before = cpu_s(engines), cpu_s(apis)
                result = run_client(args, ports[name], key, source)
                # CPU time of the API process per answered request: what the server spends on one request,
                # much less disturbed by other work on the machine than requests/s
                result["api_cpu_ms_per_request"] = round((cpu_s(apis) - api_before) * 1000 / max(result["ok"], 1), 3)
                rounds[name].append(result)
                if name != "bare":  # the loader's backlog drains before the next target's turn
                    answered = time.monotonic()
                    wait_loaded(data if name == "segport" else base / "baseline")
                    drain_s[name].append(round(time.monotonic() - answered, 2))
                    engine_cpu[name].append(round(cpu_s(engines) - before, 2))
        med = {name: median_round(rs) for name, rs in rounds.items()}
        rss = api_rss_mb(servers["segport"].pid)
        stores = open_stores(Settings(data_dir=data), migrate=False)
        spool = EventSpool(stores.db)
        out: dict[str, Any] = {
            "events_per_batch": args.events,
            "connections": args.connections,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "bare": med["bare"],
            "segport": med["segport"],
            "ratio": round(med["segport"]["requests_per_s"] / med["bare"]["requests_per_s"], 3),
            "ratio_per_round": [
                round(s["requests_per_s"] / b["requests_per_s"], 3)
                for s, b in zip(rounds["segport"], rounds["bare"], strict=True)
            ],
            "segport_p99_ms": med["segport"]["p99_ms"],
            "cpu_ratio": round(
                statistics.median(r["api_cpu_ms_per_request"] for r in rounds["bare"])
                / statistics.median(r["api_cpu_ms_per_request"] for r in rounds["segport"]),
                3,
            ),
            "api_rss_mb": rss,
            "engine_cpu_s_per_round": engine_cpu["segport"],
            "drain_s_per_round": drain_s["segport"],
            "freshness": freshness(data),
            "batches_in_spool": spool.count(),
            "acknowledged": sum(r["ok"] for r in rounds["segport"]),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 1) for x in os.getloadavg()],
            "all_rounds": {name: [r["requests_per_s"] for r in rs] for name, rs in rounds.items()},
            "api_cpu_ms_per_request": {name: [r["api_cpu_ms_per_request"] for r in rs] for name, rs in rounds.items()},
        }
        if args.baseline_src:
            out["baseline"] = med["baseline"]
            out["baseline_cpu_ratio"] = round(
                statistics.median(r["api_cpu_ms_per_request"] for r in rounds["bare"])
                / statistics.median(r["api_cpu_ms_per_request"] for r in rounds["baseline"]),
                3,
            )
            out["baseline_ratio"] = round(med["baseline"]["requests_per_s"] / med["bare"]["requests_per_s"], 3)
            out["baseline_engine_cpu_s_per_round"] = engine_cpu["baseline"]
            out["baseline_drain_s_per_round"] = drain_s["baseline"]
        stores.close()
        finished = True
        return out
    finally:
        for proc in servers.values():
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if finished:  # the spools of a run, hundreds of MB (a failed run keeps them, and server.log, to be read)
            shutil.rmtree(base, ignore_errors=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-src", default="", help="another source tree's segport, measured in the same turns")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--key", default="", help=argparse.SUPPRESS)
    ap.add_argument("--source", default="", help=argparse.SUPPRESS)
    ap.add_argument("--path", default="", help=argparse.SUPPRESS)
    ap.add_argument("--data", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


if __name__ == "__main__":
    ns = parse()
    if ns.client:
        client(ns)
    elif ns.bare_server:
        bare_server(ns)
    else:
        print(json.dumps(main(ns), indent=2))
