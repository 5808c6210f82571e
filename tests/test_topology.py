"""The scale-out topology on one machine: separate processes as separate hosts, nothing shared on disk.

Two `segport api` processes and two `segport worker` processes, each with a data dir of its own, share one
PostgreSQL metadata store and job queue (a real server), one S3 bucket for the results (a real JuiceFS S3
gateway, which checks signatures) and one ClickHouse (the stand-in of tests/chdb_http.py: ClickHouse's own
engine behind its HTTP interface). 40 distinct exports submitted through both API processes each FINISH
exactly once (one attempt), downloaded through the *other* API process, byte for byte the files of a
single-process run on the embedded DuckDB engine; a worker killed with SIGKILL in the middle of an export
loses nothing: the job finishes on the other worker, on its second attempt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from segport.domain.jobs import TargetKind
from segport.roles.inline import build
from segport.services.data import SegmentSpec
from segport.services.exports import ExportRequest
from segport.settings import Settings
from segport.worker import Worker
from tests.conftest import CATALOG_CSV, COLUMNS, PROJECT, USERS, auth, free_port, pid_at, write_users_csv
from tests.pg_support import PgCluster
from tests.s3_support import S3Gateway

pytestmark = pytest.mark.timeout(600)

RULE = {"key": "usr_age", "op": "lte", "value": 41}
PROPERTY_SETS = [
    [],
    ["id_$basic_userId"],
    ["id_$basic_userId", "usr_gender", "tag_rfm"],
    ["usr_city", "usr_age", "usr_score"],
    ["id_$anonymous_user", "usr_since", "usr_city"],
    ["tag_rfm", "usr_gender"],
    COLUMNS,
    list(reversed(COLUMNS)),
]
VARIANTS = [  # with the 8 property sets: 40 distinct requests, so none is deduplicated into another
    {"fileFormat": "csv", "csvHeaderType": "key"},
    {"fileFormat": "csv", "csvHeaderType": "name"},
    {"fileFormat": "json"},
    {"fileFormat": "csv", "csvHeaderType": "key", "bom": True},
    {"fileFormat": "json", "compression": "gzip"},
]
REQUESTS = [{"properties": props, **variant} for variant in VARIANTS for props in PROPERTY_SETS]
FAST = {
    "SEGPORT_LEASE_S": "3",
    "SEGPORT_HEARTBEAT_S": "0.5",
    "SEGPORT_POLL_INTERVAL_S": "0.2",
    "SEGPORT_MAX_QUEUED_JOBS_PER_PROJECT": "100",
    "SEGPORT_MAX_RUNNING_JOBS_PER_PROJECT": "4",
}


def many_users(n: int) -> list[dict[str, str | None]]:
    """The conftest's awkward users, then ``n`` more with varied values (ages on both sides of the rule)."""
    out = list(USERS)
    for i in range(n):
        out.append(
            {
                "id_$basic_userId": f"U{i:05d}",
                "id_$anonymous_user": f"a{i}||b{i}" if i % 3 == 0 else (f"a{i}" if i % 3 == 1 else None),
                "usr_gender": ("男", "女", "", None)[i % 4],
                "usr_city": ("北京", '说 "你好", 再见', "line1\nline2", "=1+2", None)[i % 5],
                "usr_age": str(18 + i % 50) if i % 7 else None,
                "usr_score": f"{(i % 200) / 8 - 5:g}" if i % 5 else None,
                "usr_since": f"20{10 + i % 15}-0{1 + i % 9}-1{i % 10}" if i % 6 else None,
                "tag_rfm": ("高", "中", "低", None)[i % 4],
            }
        )
    return out


class Host:
    """One `segport` process with a data dir of its own, as on a host of its own."""

    def __init__(self, name: str, root: Path, env: dict[str, str]) -> None:
        self.name, self.data_dir, self.log = name, root / name, root / f"{name}.log"
        self.data_dir.mkdir()
        self.env = {**os.environ, **env, "SEGPORT_DATA_DIR": str(self.data_dir)}
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "segport.cli", *args], env=self.env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"segport {' '.join(args)}: {done.stderr}"
        return done.stdout

    def start(self, *args: str, extra_env: dict[str, str] | None = None) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "segport.cli", *args],
                env={**self.env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@pytest.fixture
def hosts(tmp_path: Path, pg_cluster: PgCluster, s3_gateway: S3Gateway, chdb_http: str) -> Iterator[dict[str, Host]]:
    database = f"topo_{os.getpid()}_{int(time.time())}"
    # compress=false: the stand-in reads plain request bodies (a real server also takes lz4)
    clickhouse = chdb_http.replace("http://", "http://default:@") + f"/{database}?compress=false"
    common = {
        "SEGPORT_METADATA_URL": pg_cluster.new_store_url(),
        "SEGPORT_ENGINE": "clickhouse",
        "SEGPORT_CLICKHOUSE_URL": clickhouse,
        **s3_gateway.env(s3_gateway.new_bucket()),
        **FAST,
    }
    made = {name: Host(name, tmp_path, common) for name in ("api1", "api2", "worker1", "worker2")}
    yield made
    for host in made.values():  # every process this test started, stopped by its PID
        host.stop(signal.SIGKILL)


def load_data(host: Host, root: Path) -> Path:
    """Project, token, catalogue, users and the segment, through the CLI of one host (no server runs)."""
    host.cli("project", "create", PROJECT, "--name", "示例项目")
    token = host.cli("token", "create", "--project", PROJECT).strip().splitlines()[-1]
    (root / "catalog.csv").write_text(CATALOG_CSV, encoding="utf-8")
    host.cli("catalog", "import", "--project", PROJECT, str(root / "catalog.csv"))
    users = write_users_csv(root / "users.csv", many_users(600))
    host.cli("users", "import", "--project", PROJECT, str(users))
    host.cli(
        "segment",
        "create",
        "--project",
        PROJECT,
        "--key",
        "seg_young",
        "--name",
        "年轻用户",
        "--rule",
        json.dumps(RULE),
    )
    (root / "token").write_text(token)
    return users


def reference_files(root: Path, users: Path) -> dict[int, dict[str, bytes]]:
    """The files of a single-process run on the embedded DuckDB engine: request index -> {file name: bytes}."""
    app = build(Settings(data_dir=root / "reference", serve_workers=False))
    try:
        app.meta.create_project(PROJECT, "示例项目", "Asia/Shanghai")
        app.data.import_catalog_csv(PROJECT, CATALOG_CSV)
        app.data.import_users(PROJECT, users)
        app.data.create_segment(PROJECT, SegmentSpec("seg_young", "年轻用户", rule=RULE))
        _, token = app.meta.create_token([PROJECT])
        who = app.meta.authenticate(token)
        rows = {}
        for i, body in enumerate(REQUESTS):
            req = ExportRequest(
                body["properties"],
                body["fileFormat"],
                body.get("csvHeaderType"),
                bom=bool(body.get("bom")),
                compression=body.get("compression"),
            )
            rows[i] = app.exports.submit(who, PROJECT, TargetKind.SEGMENT, "seg_young", req)
        Worker(app).run_until_empty()
        out: dict[int, dict[str, bytes]] = {}
        for i, row in rows.items():
            done = app.queue.get(row.id)
            out[i] = {}
            for uri in app.exports.uris(done):
                found = app.exports.download(who, unquote(uri))
                out[i][found.file_name] = Path(found.path).read_bytes()
        return out
    finally:
        app.close()


def wait_until_up(base: str, host: Host) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert host.process is not None and host.process.poll() is None, host.log.read_text()
        try:
            httpx.get(base + "/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{host.name} did not start:\n{host.log.read_text()}")


def wait_finished(base: str, token: str, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.get(f"{base}/v1/api/job/result/{job_id}", headers=auth(token), timeout=10)
        assert r.status_code == 200, r.text
        result = r.json()
        if result["stage"] in ("FINISH", "ERROR"):
            return result
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {result}")


def test_two_api_and_two_worker_hosts_on_postgres_s3_and_clickhouse(tmp_path: Path, hosts: dict[str, Host]) -> None:
    users = load_data(hosts["api1"], tmp_path)
    token = (tmp_path / "token").read_text()
    expected = reference_files(tmp_path, users)

    ports = {name: free_port() for name in ("api1", "api2")}
    bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    for name, port in ports.items():
        hosts[name].start("api", "--host", "127.0.0.1", "--port", str(port))
    for name in ports:
        wait_until_up(bases[name], hosts[name])
    pause = tmp_path / "paused-worker.pid"

    # worker 1 takes the first job and is stopped in the middle of it (a test pause point), then killed
    hosts["worker1"].start(
        "worker",
        extra_env={
            "SEGPORT_MAX_RUNNING_JOBS": "1",
            "SEGPORT_TEST_PAUSE_AT": "export-started",
            "SEGPORT_TEST_PAUSE_FILE": str(pause),
        },
    )
    submitted: dict[int, str] = {}
    r = httpx.post(
        f"{bases['api1']}/v1/api/projects/{PROJECT}/segment_profiles/seg_young/export_jobs",
        headers=auth(token),
        json=REQUESTS[0],
        timeout=30,
    )
    assert r.status_code == 200, r.text
    submitted[0] = r.json()["id"]
    assert pid_at(pause, "worker 1's pause point", 60) == hosts["worker1"].process.pid  # type: ignore[union-attr]
    running = httpx.get(f"{bases['api2']}/v1/api/job/result/{submitted[0]}", headers=auth(token)).json()
    assert running["stage"] == "RUNNING" and running["attempts"] == 1

    hosts["worker2"].start("worker")
    hosts["worker1"].stop(signal.SIGKILL)
    victim = wait_finished(bases["api2"], token, submitted[0])  # worker 2 is the only live worker until it ends
    assert victim["stage"] == "FINISH", victim
    assert victim["attempts"] == 2  # the killed attempt, then the other worker's

    hosts["worker1"].start("worker")  # host 1 back with a fresh worker: two workers share the rest
    for i in range(1, len(REQUESTS)):
        api = bases["api1"] if i % 2 else bases["api2"]
        r = httpx.post(
            f"{api}/v1/api/projects/{PROJECT}/segment_profiles/seg_young/export_jobs",
            headers=auth(token),
            json=REQUESTS[i],
            timeout=30,
        )
        assert r.status_code == 200, r.text
        submitted[i] = r.json()["id"]
    assert len(set(submitted.values())) == len(REQUESTS)  # 40 jobs, none deduplicated into another

    for i, job_id in submitted.items():
        # poll and download through the API process the job was NOT submitted to: it has none of the files
        other = bases["api2"] if i % 2 else bases["api1"]
        result = wait_finished(other, token, job_id)
        assert result["stage"] == "FINISH", (i, result)
        if i:
            assert result["attempts"] == 1, (i, result)  # run exactly once
        got = {}
        for uri in result["uris"]:
            r = httpx.get(f"{other}/download", params={"file": unquote(uri)}, headers=auth(token), timeout=60)
            assert r.status_code == 200, r.text
            got[unquote(uri).rsplit("/", 1)[1]] = r.content
        assert expected[i] and got == expected[i], f"request {i} {REQUESTS[i]}: not the single-process run's files"
    for host in hosts.values():  # no host keeps a result file on its own disk: they live in the bucket
        kept = [p for p in host.data_dir.rglob("*UserList*") if p.is_file()]
        assert kept == [], (host.name, kept)
