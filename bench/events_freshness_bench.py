"""Freshness: the time from a collect request's 200 to its events being in the engine's event store, under a steady load.

Starts `segport serve` (one API process and its engine process) on a fresh data dir with a project and a data
source, then posts JSON batches of ``--events`` events at ``--rate`` batches per second for ``--seconds`` from
this process. A batch's freshness is read from the spool afterwards: ``received_at`` (committed just before its
200) to ``loaded_at`` (set by the loader after the engine committed the batch's rows), so it bounds the time to
visibility from above. Prints one JSON object: batches, events, p50/p99/max freshness in seconds, the loader's
interval, and the events the store holds (checked through E18 against what was sent).

    .venv/bin/python bench/events_freshness_bench.py [--seconds 20] [--rate 20] [--events 100]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from segport.roles.inline import build
from segport.settings import Settings
from segport.store.db import Database
from segport.store.events import DataSources
from segport.store.models import EventBatchRow

P = "Fresh001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=20.0, help="batches per second")
    parser.add_argument("--events", type=int, default=100, help="events per batch")
    parser.add_argument("--interval", type=float, default=1.0, help="SEGPORT_EVENT_LOAD_INTERVAL_S")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segport-fresh-") as tmp:
        data = Path(tmp) / "data"
        app = build(Settings(data_dir=data, serve_workers=False))
        try:
            app.meta.create_project(P, "freshness")
            key, source = DataSources(app.db).add(P, "bench")
            _, token = app.meta.create_token([P])
        finally:
            app.close()
        port = free_port()
        env = {
            **os.environ,
            "SEGPORT_DATA_DIR": str(data),
            "SEGPORT_API_PROCESSES": "1",
            "SEGPORT_EVENT_LOAD_INTERVAL_S": str(args.interval),
        }
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - handed to the server process
        server = subprocess.Popen(
            [sys.executable, "-m", "segport.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    httpx.get(base + "/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("segport serve did not start") from None
                    time.sleep(0.2)
            sent = run_load(base, key, source, args)
            time.sleep(args.interval * 3 + 5)  # let the loader drain
            result = measure(data, sent, args)
            result["storedThroughE18"] = stored(base, token, sent)
            print(json.dumps(result))
        finally:
            server.terminate()
            server.wait(30)
            log.close()


def run_load(base: str, key: str, source: str, args: argparse.Namespace) -> int:
    batches = int(args.seconds * args.rate)
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        for b in range(batches):
            due = started + b / args.rate
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            now = int(time.time() * 1000)
            body = [
                {
                    "eventType": "CUSTOM",
                    "timestamp": now,
                    "eventName": "bench",
                    "userId": f"U{(b * args.events + i) % 1000}",
                    "attributes": {"b": str(b), "i": str(i)},
                    "dataSourceId": source,
                    "projectKey": key,
                }
                for i in range(args.events)
            ]
            r = client.post(
                f"{base}/v3/projects/{key}/collect?stm={now}",
                content=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            if r.status_code != 200:
                raise SystemExit(f"collect answered {r.status_code}: {r.text}")
    return batches


def freshness(data: Path) -> dict[str, Any]:
    """The spool's loaded batches and the p50/p99/max of their ``received_at`` -> ``loaded_at``, in seconds (also
    read by bench/events_bench.py, for the freshness at its saturating load)."""
    db = Database(Settings(data_dir=data).resolved_metadata_url())
    try:
        with db.read() as s:
            rows = s.execute(select(EventBatchRow.received_at, EventBatchRow.loaded_at)).all()
    finally:
        db.close()
    lags = [(loaded - received).total_seconds() for received, loaded in rows if loaded is not None]
    return {
        "batchesLoaded": len(lags),
        "freshnessP50Seconds": round(quantile(lags, 0.50), 3) if lags else None,
        "freshnessP99Seconds": round(quantile(lags, 0.99), 3) if lags else None,
        "freshnessMaxSeconds": round(max(lags), 3) if lags else None,
    }


def measure(data: Path, sent: int, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "batchesSent": sent,
        "eventsSent": sent * args.events,
        "loadIntervalSeconds": args.interval,
        **freshness(data),
    }


def stored(base: str, token: str, sent: int) -> int:
    """Events of user U0 the store answers through E18, against the number sent to it."""
    total, offset = 0, 0
    with httpx.Client(timeout=30) as client:
        while True:
            r = client.get(
                f"{base}/v1/api/projects/{P}/users/$basic_userId/U0/events",
                params={"limit": 1000, "offset": offset, "order": "asc"},
                headers={"Authorization": f"Bearer {token}"},
            )
            page = r.json()
            total += len(page["values"])
            if not page["hasNextPage"]:
                return total
            offset += 1000


if __name__ == "__main__":
    main()
