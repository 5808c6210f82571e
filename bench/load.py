"""Load on a running `segport serve`: N concurrent clients that submit exports and poll their results.

Each client submits an export (a random choice and order of properties, so that jobs are distinct and not
deduplicated), polls its result every ``--poll-interval`` seconds (with jitter) until FINISH or ERROR, and
starts again. The run is bounded: it stops after ``--max-seconds``, after ``--max-requests`` requests, or as
soon as the job ``--watch-job`` (e.g. a 10M-row export running meanwhile) has finished, whichever comes first.
It prints one JSON object: latency percentiles of submits and of job-result polls, counts, 429s and errors.

    python bench/load.py --base http://127.0.0.1:8000 --token T --project BenchSml --segment seg_small
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import ssl
import time
from dataclasses import dataclass, field

import httpx

KEYS = [
    "id_$basic_userId",
    "id_$anonymous_user",
    "usr_gender",
    "usr_name",
    "usr_city",
    "usr_age",
    "usr_member_since",
    "usr_total_spend",
    "usr_phone",
    "usr_last_active",
    "tag_rfm",
    "tag_channel",
]


@dataclass
class Stats:
    submit_ms: list[float] = field(default_factory=list)
    poll_ms: list[float] = field(default_factory=list)
    too_many: int = 0  # 429: the project's queued-job cap
    errors: list[str] = field(default_factory=list)
    finished: int = 0
    requests: int = 0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def client_loop(
    args: argparse.Namespace, stats: Stats, stop: asyncio.Event, seed: int, tls: ssl.SSLContext
) -> None:
    # One connection per client, each in its own pool: one shared pool of 200 connections made httpx itself
    # the bottleneck (seconds of latency at ~50 requests/s while the server could do ~450/s). The TLS context
    # (unused on plain http, but built by every transport) is shared: building 200 of them costs seconds.
    transport = httpx.AsyncHTTPTransport(verify=tls)
    async with httpx.AsyncClient(
        base_url=args.base, headers={"Authorization": f"Bearer {args.token}"}, timeout=30, transport=transport
    ) as http:
        await _client_loop(http, args, stats, stop, seed)


async def _client_loop(
    http: httpx.AsyncClient, args: argparse.Namespace, stats: Stats, stop: asyncio.Event, seed: int
) -> None:
    rng = random.Random(seed)
    url = f"/v1/api/projects/{args.project}/segment_profiles/{args.segment}/export_jobs"
    await asyncio.sleep(rng.random() * args.poll_interval)  # spread the start
    while not stop.is_set():
        body = {"properties": rng.sample(KEYS, rng.randint(1, len(KEYS))), "fileFormat": rng.choice(["csv", "json"])}
        t0 = time.perf_counter()
        try:
            r = await http.post(url, json=body)
        except httpx.HTTPError as exc:
            stats.errors.append(f"submit: {type(exc).__name__}")
            await asyncio.sleep(args.poll_interval)
            continue
        stats.requests += 1
        if r.status_code == 429:
            stats.too_many += 1
            await asyncio.sleep(args.poll_interval)
            continue
        if r.status_code != 200:
            stats.errors.append(f"submit: HTTP {r.status_code}")
            await asyncio.sleep(args.poll_interval)
            continue
        stats.submit_ms.append((time.perf_counter() - t0) * 1000)
        job = r.json()["id"]
        while not stop.is_set():
            await asyncio.sleep(args.poll_interval * (0.5 + rng.random()))
            if stop.is_set():
                break
            t0 = time.perf_counter()
            try:
                r = await http.get(f"/v1/api/job/result/{job}")
            except httpx.HTTPError as exc:
                stats.errors.append(f"poll: {type(exc).__name__}")
                continue
            stats.requests += 1
            if r.status_code != 200:
                stats.errors.append(f"poll: HTTP {r.status_code}")
                break
            stats.poll_ms.append((time.perf_counter() - t0) * 1000)
            if r.json()["stage"] in ("FINISH", "ERROR"):
                stats.finished += 1
                break
        if stats.requests >= args.max_requests:
            stop.set()


async def watcher(args: argparse.Namespace, stats: Stats, stop: asyncio.Event, started: float) -> str:
    """Ends the run when the watched job finished, or when the time or request budget is spent."""
    async with httpx.AsyncClient(base_url=args.base, headers={"Authorization": f"Bearer {args.token}"}) as http:
        while not stop.is_set():
            await asyncio.sleep(0.25)
            if time.perf_counter() - started > args.max_seconds:
                stop.set()
                return "time budget spent"
            if stats.requests >= args.max_requests:
                stop.set()
                return "request budget spent"
            if args.watch_job:
                try:
                    r = await http.get(f"/v1/api/job/result/{args.watch_job}")
                except httpx.HTTPError as exc:
                    stats.errors.append(f"watch: {type(exc).__name__}")
                    continue
                if r.status_code == 200 and r.json()["stage"] in ("FINISH", "ERROR"):
                    stop.set()
                    return f"watched job {r.json()['stage']}"
    return "stopped"


async def main(args: argparse.Namespace) -> dict:
    stats, stop = Stats(), asyncio.Event()
    started = time.perf_counter()
    tls = ssl.create_default_context()
    clients = [asyncio.create_task(client_loop(args, stats, stop, i, tls)) for i in range(args.clients)]
    try:
        reason = await watcher(args, stats, stop, started)
    finally:
        stop.set()
        await asyncio.wait(clients, timeout=35)
    elapsed = time.perf_counter() - started
    return {
        "clients": args.clients,
        "seconds": round(elapsed, 2),
        "stopped": reason,
        "requests": stats.requests,
        "submits": len(stats.submit_ms),
        "polls": len(stats.poll_ms),
        "finished_jobs": stats.finished,
        "too_many_429": stats.too_many,
        "errors": len(stats.errors),
        "error_kinds": sorted(set(stats.errors))[:5],
        "submit_p50_ms": percentile(stats.submit_ms, 0.5),
        "submit_p99_ms": percentile(stats.submit_ms, 0.99),
        "poll_p50_ms": percentile(stats.poll_ms, 0.5),
        "poll_p99_ms": percentile(stats.poll_ms, 0.99),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="Server base URL (loopback only).")
    p.add_argument("--token", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--segment", required=True)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--poll-interval", type=float, default=0.5, help="Seconds between a client's polls (mean).")
    p.add_argument("--max-seconds", type=float, default=120)
    p.add_argument("--max-requests", type=int, default=200_000)
    p.add_argument("--watch-job", default="", help="Stop when this job reaches FINISH or ERROR.")
    args = p.parse_args(argv)
    host = httpx.URL(args.base).host
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        p.error("--base must be a loopback address")
    return args


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse()))))
