"""Crash safety and write failures, for real: a `segport serve` subprocess killed with SIGKILL mid-export and
restarted; another one whose file size is capped (RLIMIT_FSIZE) so an export fails to write."""

from __future__ import annotations

import gzip
import json
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil
import pyarrow.parquet as pq
import pytest

from segport.demo import CATALOG, generate_users
from segport.roles.inline import build
from segport.services.data import SegmentSpec, catalog_entry
from segport.settings import Settings
from tests.conftest import PROJECT, LiveServer, auth, engine_pid, pid_at, start_server, stop_server, wait_for

USERS = 200_000
PROPS = ["id_$basic_userId", "usr_name", "usr_gender", "usr_city", "tag_rfm", "tag_channel"]
FAST = {
    "SEGPORT_DUCKDB_THREADS": "1",
    "SEGPORT_LEASE_S": "3",
    "SEGPORT_HEARTBEAT_S": "0.5",
    "SEGPORT_POLL_INTERVAL_S": "0.2",
    "SEGPORT_CLEANUP_INTERVAL_S": "0.5",
    "SEGPORT_MAX_RUNNING_JOBS": "1",
}


def make_data_dir(tmp_path: Path, users: int) -> tuple[Path, str, Path]:
    """A data dir with `users` demo users, a segment of all of them (seg_all) and a small one (seg_few)."""
    data = tmp_path / "data"
    parquet = tmp_path / "users.parquet"
    generate_users(parquet, users)
    app = build(Settings(data_dir=data))
    try:
        app.meta.create_project(PROJECT, "崩溃测试")
        app.data.add_catalog_entries(PROJECT, [catalog_entry(k, n, t) for k, n, t in CATALOG])
        app.data.import_users(PROJECT, parquet)
        app.data.create_segment(
            PROJECT, SegmentSpec(key="seg_all", name="全部", rule={"key": "id_$basic_userId", "op": "not_null"})
        )
        app.data.create_segment(
            PROJECT,
            SegmentSpec(
                key="seg_few",
                name="少数",
                rule={"key": "id_$basic_userId", "op": "in", "value": ["C0000001", "C0000002", "C0000003"]},
            ),
        )
        _, token = app.meta.create_token([PROJECT])
    finally:
        app.close()
    return data, token, parquet


def expected_jsonl(parquet: Path, keys: list[str]) -> bytes:
    """The JSON Lines file, written from the source file independently of the engine (gio_id = file order)."""
    table = pq.read_table(parquet, columns=keys).to_pylist()
    lines = []
    for gio_id, user in enumerate(table, start=1):
        line = {
            "gio_id": str(gio_id),
            "identifications": {k: user[k] for k in keys if k.startswith("id_")},
            "properties": {k: user[k] for k in keys if not k.startswith("id_")},
        }
        lines.append(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def submit(server: LiveServer, token: str, segment: str, body: dict) -> dict:
    url = f"{server.base_url}/v1/api/projects/{PROJECT}/segment_profiles/{segment}/export_jobs"
    r = httpx.post(url, headers=auth(token), json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def job_result(server: LiveServer, token: str, job_id: str) -> dict:
    r = httpx.get(f"{server.base_url}/v1/api/job/result/{job_id}", headers=auth(token), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_sigkill_mid_export_then_restart_finishes_the_job_with_the_right_bytes(tmp_path: Path) -> None:
    data, token, parquet = make_data_dir(tmp_path, USERS)
    log = tmp_path / "server.log"
    hold = tmp_path / "hold"  # segport/testing_hooks.py: while it exists, an export holds once its file has bytes
    env = {**FAST, "SEGPORT_TEST_HOLD_AT": "export-file-written", "SEGPORT_TEST_HOLD_FILE": str(hold)}
    server = start_server(data, log, env)
    hold.touch()
    try:
        job = submit(server, token, "seg_all", {"properties": PROPS, "fileFormat": "json", "compression": "gzip"})
        staging = data / "results" / ".staging" / f"{job['id']}-1"
        # held with its file begun and unpublished, however fast the machine: the SIGKILL below meets it there
        # (a freeze on seeing the partial file could miss an export that finishes between two looks)
        assert pid_at(Path(f"{hold}.held"), "the export to start writing") == engine_pid(server)
        (partial,) = [p for p in staging.glob("*") if p.is_file()]
        assert partial.stat().st_size > 0
        running = job_result(server, token, job["id"])
        assert running["stage"] == "RUNNING" and running["uris"] == []
    finally:
        kids = psutil.Process(server.process.pid).children(recursive=True)
        server.process.send_signal(signal.SIGKILL)  # mid-export (held there), no chance to clean up
        server.process.wait(10)
        # its API and engine processes follow it (parent-death signal), a moment later: the restart below must
        # not find the old engine still holding the DuckDB file
        _, alive = psutil.wait_procs(kids, timeout=15)
        assert not alive, alive
        hold.unlink(missing_ok=True)  # the restart below goes straight on
    assert isinstance(partial, Path) and partial.exists()  # the kill left a partial file behind
    uri = quote(f"/jobs/results/{job['name']}/{partial.name}", safe="")

    expected = expected_jsonl(parquet, PROPS)
    server = start_server(data, log, env)
    try:
        polls = 0
        while True:  # until the lease lapses, the job is reclaimed and runs again
            polls += 1
            assert polls < 3000, "the job never finished after the restart"
            d = httpx.get(f"{server.base_url}/download?file={uri}", headers=auth(token), timeout=60)
            if d.status_code == 200:  # only ever the whole file
                assert gzip.decompress(d.content) == expected
                break
            assert d.status_code == 404, d.text
            result = job_result(server, token, job["id"])
            if result["stage"] != "FINISH":  # (it may have just finished between the two requests)
                assert result["stage"] in ("NONE", "RUNNING") and result["uris"] == [], result
            time.sleep(0.02)
        result = job_result(server, token, job["id"])
        assert result["stage"] == "FINISH", result
        assert result["attempts"] == 2
        assert result["rows"] == USERS
        assert result["uris"] == [uri]
        # the killed attempt's partial file is swept by the janitor
        wait_for(lambda: not any((data / "results" / ".staging").iterdir()), "the stale staging folder to go", 10)
    finally:
        stop_server(server)


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child: get EFBIG from write() instead of being killed by SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_write_failure_is_error_with_clear_message_and_the_server_keeps_serving(tmp_path: Path, fmt: str) -> None:
    data, token, _ = make_data_dir(tmp_path, 40_000)
    server = start_server(data, tmp_path / "server.log", FAST, preexec_fn=_file_size_limit(1_000_000))
    try:
        big = submit(server, token, "seg_all", {"properties": [k for k, _, _ in CATALOG], "fileFormat": fmt})
        result = wait_for(
            lambda: (r := job_result(server, token, big["id"]))["stage"] in ("FINISH", "ERROR") and r,
            "the big export to end",
        )
        assert isinstance(result, dict)
        assert result["stage"] == "ERROR", result
        assert result["uris"] == []
        assert result["error"]["code"] == "STORAGE_FULL"
        assert "File too large" in result["error"]["message"]
        assert not any((data / "results" / ".staging").iterdir()), "the partial file was left behind"
        assert not (data / "results" / result["name"]).exists()
        # the server is alive and a small export still works
        small = submit(server, token, "seg_few", {"properties": ["id_$basic_userId"], "fileFormat": fmt})
        done = wait_for(
            lambda: (r := job_result(server, token, small["id"]))["stage"] in ("FINISH", "ERROR") and r,
            "the small export to end",
        )
        assert isinstance(done, dict) and done["stage"] == "FINISH", done
        d = httpx.get(f"{server.base_url}/download?file={done['uris'][0]}", headers=auth(token), timeout=30)
        assert d.status_code == 200 and b"C0000002" in d.content
        assert server.process.poll() is None
    finally:
        stop_server(server)
