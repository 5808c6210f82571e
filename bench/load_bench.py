"""The load run alone, on a data dir bench/export_bench.py built: quicker to repeat than the whole bench.

    .venv/bin/python bench/load_bench.py bench/out/data-1000000 --seconds 30

Starts a real `segport serve` on the data dir (its earlier jobs and results are dropped first), keeps an
export of the big segment running throughout (a new one, with another column order, as soon as the last one
finished), and meanwhile runs bench/load.py: 200 clients that submit small exports and poll them about once a
second. Prints load.py's JSON plus requests/s, the server's CPU seconds, the exports that finished and the
machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import export_bench as eb
import httpx


def cpu_seconds(pid: int) -> float:
    """CPU seconds of the server and every process under it (`segport serve` supervises API processes and
    an engine process; a process replaced during the run loses its share)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def small_exports(base: str, token: str, runs: int) -> dict:
    """``runs`` distinct exports of the ~10k-member segment one after another, while the big exports go on:
    submit to FINISH as the client sees it (polling every 5 ms) and as the server records it."""
    client_s, server_s = [], []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=600) as http:
        for i in range(runs):
            # each body distinct (a repeat would be deduplicated to a finished job and time nothing)
            keys = eb.KEYS[i % len(eb.KEYS) :] + eb.KEYS[: i % len(eb.KEYS)]
            body = eb.body_for("csv+key" if (i // len(eb.KEYS)) % 2 == 0 else "json", keys)
            seconds, result = eb.export(http, eb.SMALL, eb.SMALL_SEGMENT, body, poll_s=0.005)
            client_s.append(seconds)
            server_s.append(eb._server_seconds(result))
    return {
        "small_runs": runs,
        "small_submit_to_finish_median_ms": round(statistics.median(client_s) * 1000, 1),
        "small_server_median_ms": round(statistics.median(server_s) * 1000, 1),
    }


def keep_exporting(base: str, token: str, stop: threading.Event, done: list[int]) -> None:
    rng = random.Random(1)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=600) as http:
        while not stop.is_set():
            body = eb.body_for("csv+key", rng.sample(eb.KEYS, len(eb.KEYS)))
            r = http.post(f"/v1/api/projects/{eb.BIG}/segment_profiles/{eb.SEGMENT}/export_jobs", json=body)
            r.raise_for_status()
            job = r.json()["id"]
            while not stop.is_set():
                if http.get(f"/v1/api/job/result/{job}").json()["stage"] in ("FINISH", "ERROR"):
                    done[0] += 1
                    break
                time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path, help="A data dir made by bench/export_bench.py (bench/out/data-<N>).")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--small-runs", type=int, default=20, help="Small exports timed after the load run.")
    args = p.parse_args()
    info = json.loads((args.data_dir / "bench.json").read_text())
    eb._forget_jobs(args.data_dir)
    shutil.rmtree(args.data_dir / "results", ignore_errors=True)
    server = eb.start_server(args.data_dir)
    stop, exported = threading.Event(), [0]
    try:
        threading.Thread(target=keep_exporting, args=(server.base, info["token"], stop, exported), daemon=True).start()
        time.sleep(1)
        cpu0 = cpu_seconds(server.process.pid)
        done = subprocess.run(
            [
                sys.executable,
                str(eb.HERE / "load.py"),
                "--base",
                server.base,
                "--token",
                info["token"],
                "--project",
                eb.SMALL,
                "--segment",
                eb.SMALL_SEGMENT,
                "--clients",
                str(args.clients),
                "--max-seconds",
                str(args.seconds),
                "--poll-interval",
                str(args.poll_interval),
            ],
            capture_output=True,
            text=True,
            timeout=args.seconds + 120,
        )
        if done.returncode != 0:
            raise SystemExit(f"load.py failed:\n{done.stderr}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        out["requests_per_s"] = round(out["requests"] / out["seconds"], 1)
        out["server_cpu_s"] = round(cpu_seconds(server.process.pid) - cpu0, 1)
        out["big_exports_finished"] = exported[0]
        out["load_average"] = round(os.getloadavg()[0], 2)
        out.update(small_exports(server.base, info["token"], args.small_runs))  # the big export still runs
        print(json.dumps(out))
    finally:
        stop.set()
        eb.stop_server(server)
        shutil.rmtree(args.data_dir / "results", ignore_errors=True)


if __name__ == "__main__":
    main()
