"""S3 result storage with real `segport` processes and a real S3 server (tests/s3_support.py): start-up checks,
a worker killed with SIGKILL mid-upload, S3 going away mid-export, and an API process that never sees the
worker's disk serving the file."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from segport.demo import CATALOG, generate_users
from segport.roles.inline import build
from segport.services.data import SegmentSpec, catalog_entry
from segport.settings import Settings
from tests.conftest import (
    PROJECT,
    auth,
    free_port,
    pid_at,
    process_tree,
    start_server,
    stop_server,
    wait_for,
)
from tests.s3_support import S3Gateway
from tests.test_crash import FAST, PROPS, expected_jsonl, job_result, make_data_dir, submit


def uploads_of(gateway: S3Gateway, bucket: str, marker: str) -> list[dict]:
    found = gateway.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [u for u in found if marker in u["Key"]]


def object_keys(gateway: S3Gateway, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in gateway.client().list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_missing_bucket_or_a_wrong_secret_is_one_line_at_start_up(
    tmp_path: Path, s3_gateway: S3Gateway, command: str
) -> None:
    bucket = s3_gateway.new_bucket()
    cases = {
        "S3 bucket 'no-such-bucket-x' does not exist at http://127.0.0.1:": {"SEGPORT_S3_BUCKET": "no-such-bucket-x"},
        "S3 refused access to bucket": {"AWS_SECRET_ACCESS_KEY": "wrong-secret-key-0000"},
        "SEGPORT_RESULTS=s3 needs SEGPORT_S3_BUCKET": {"SEGPORT_S3_BUCKET": ""},
    }
    if command == "worker":  # the same check: one case shows `segport worker` runs it too
        cases = {k: v for k, v in cases.items() if "refused" in k}
    for words, bad in cases.items():
        env = {**os.environ, **s3_gateway.env(bucket), **bad, "SEGPORT_DATA_DIR": str(tmp_path / "data")}
        args = ["serve", "--port", str(free_port())] if command == "serve" else ["worker"]
        proc = subprocess.run(
            [sys.executable, "-m", "segport.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode != 0, proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr


def test_sigkill_mid_upload_then_restart_finishes_with_no_stray_object(tmp_path: Path, s3_gateway: S3Gateway) -> None:
    data, token, parquet = make_data_dir(tmp_path, 200_000)
    bucket = s3_gateway.new_bucket()
    hold = tmp_path / "hold"  # segport/testing_hooks.py: while it exists, an upload holds after its first part
    env = {
        **FAST,
        **s3_gateway.env(bucket),
        "SEGPORT_S3_UPLOAD_BUFFERS": "1",
        "SEGPORT_TEST_HOLD_AT": "s3-part-sent",
        "SEGPORT_TEST_HOLD_FILE": str(hold),
    }
    log = tmp_path / "server.log"
    server = start_server(data, log, env)
    hold.touch()
    try:
        job = submit(server, token, "seg_all", {"properties": PROPS, "fileFormat": "json"})
        marker = f"/{job['id']}-1/"
        # held with its first part in, however fast the machine: the SIGKILL below meets it mid-upload
        pid_at(Path(f"{hold}.held"), "a part of the export to reach S3")
        (upload,) = uploads_of(s3_gateway, bucket, marker)
        parts = s3_gateway.client().list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        assert parts.get("Parts")
        # meanwhile the local staging folder holds a FIFO, not a copy of the file
        staging = data / "results" / ".staging" / f"{job['id']}-1"
        entries = list(staging.iterdir())
        assert entries and all(stat.S_ISFIFO(e.lstat().st_mode) for e in entries), entries
    finally:
        # mid-upload, no chance to abort anything
        for proc in process_tree(server):
            proc.send_signal(signal.SIGKILL)
        server.process.wait(10)
        hold.unlink(missing_ok=True)  # the restart below goes straight on
    assert uploads_of(s3_gateway, bucket, marker)  # the killed attempt's upload is still open
    assert object_keys(s3_gateway, bucket) == []  # and nothing was published

    server = start_server(data, log, env)
    try:
        result = wait_for(
            lambda: (r := job_result(server, token, job["id"]))["stage"] == "FINISH" and r, "the job to finish", 120
        )
        assert isinstance(result, dict) and result["attempts"] == 2 and result["rows"] == 200_000
        (uri,) = result["uris"]
        got = httpx.get(f"{server.base_url}/download?file={uri}", headers=auth(token), timeout=60)
        assert got.status_code == 200 and got.content == expected_jsonl(parquet, PROPS)
        # the only object is the finishing attempt's; the janitor aborts the killed attempt's upload
        (key,) = object_keys(s3_gateway, bucket)
        assert f"/{job['id']}-2/" in key
        wait_for(lambda: not uploads_of(s3_gateway, bucket, marker), "the stale upload to be aborted", 30)
        wait_for(lambda: not any((data / "results" / ".staging").iterdir()), "the FIFO folder to go", 10)
    finally:
        stop_server(server)


def test_s3_going_away_mid_export_is_a_clear_error_and_the_server_keeps_serving(
    tmp_path: Path, own_s3_gateway: S3Gateway
) -> None:
    gateway = own_s3_gateway
    data, token, _ = make_data_dir(tmp_path, 200_000)
    bucket = gateway.new_bucket()
    hold = tmp_path / "hold"  # segport/testing_hooks.py: while it exists, an upload holds after its first part
    env = {
        **FAST,
        **gateway.env(bucket),
        "SEGPORT_S3_UPLOAD_BUFFERS": "1",
        "SEGPORT_S3_PART_SIZE_BYTES": str(5 << 20),  # more, smaller parts: the export is still uploading when S3 goes
        "SEGPORT_S3_TIMEOUT_S": "3",
        "SEGPORT_TEST_HOLD_AT": "s3-part-sent",
        "SEGPORT_TEST_HOLD_FILE": str(hold),
    }
    server = start_server(data, tmp_path / "server.log", env)
    try:
        first = submit(server, token, "seg_few", {"properties": PROPS})
        done = wait_for(lambda: (r := job_result(server, token, first["id"]))["stage"] == "FINISH" and r, "seg_few")
        url = f"{server.base_url}/download?file={done['uris'][0]}"  # type: ignore[index]
        content = httpx.get(url, headers=auth(token), timeout=30).content
        assert content.startswith(b'"gio_id"')

        # the upload holds once its first part is in, until S3 has gone: it is mid-upload when S3 goes, however
        # fast or slow the machine (a freeze on seeing the upload could miss one that completes between two looks)
        hold.touch()
        job = submit(server, token, "seg_all", {"properties": PROPS, "fileFormat": "json"})
        try:
            pid_at(Path(f"{hold}.held"), "the upload to hold after its first part")
            assert uploads_of(gateway, bucket, f"/{job['id']}-1/")  # open, not completed
            gateway.stop()  # S3 is gone mid-export
        finally:
            hold.unlink(missing_ok=True)

        failed = wait_for(
            lambda: (r := job_result(server, token, job["id"]))["stage"] != "RUNNING" and r, "the job to end", 120
        )
        assert isinstance(failed, dict) and failed["stage"] == "ERROR", failed
        assert failed["error"]["code"] == "RESULT_STORE_UNAVAILABLE"
        assert "S3" in failed["error"]["message"] and failed["uris"] == []
        # the server keeps answering; a download while S3 is down is a 503 in the one error shape
        assert job_result(server, token, first["id"])["stage"] == "FINISH"
        down = httpx.get(url, headers=auth(token), timeout=60)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "RESULT_STORE_UNAVAILABLE"
        assert httpx.head(url, headers=auth(token), timeout=60).status_code == 503

        gateway.start()  # back, on the same port: served again, and the janitor aborts the dead upload
        assert httpx.get(url, headers=auth(token), timeout=30).content == content
        wait_for(lambda: not uploads_of(gateway, bucket, ""), "the failed attempt's upload to be aborted", 30)
        assert all(f"/{first['id']}-1/" in k for k in object_keys(gateway, bucket))
    finally:
        stop_server(server)


def test_an_api_process_without_the_workers_disk_serves_the_file(tmp_path: Path, s3_gateway: S3Gateway) -> None:
    """Two data dirs sharing one metadata database: the worker's and the API's; the file goes through S3 only."""
    shared = tmp_path / "shared"
    shared.mkdir()
    meta = {"SEGPORT_METADATA_URL": f"sqlite:///{shared / 'meta.sqlite'}"}
    worker_dir, api_dir = tmp_path / "worker-data", tmp_path / "api-data"
    parquet = tmp_path / "users.parquet"
    generate_users(parquet, 5000)
    app = build(Settings(data_dir=worker_dir, metadata_url=meta["SEGPORT_METADATA_URL"]))
    try:
        app.meta.create_project(PROJECT, "拆分")
        app.data.add_catalog_entries(PROJECT, [catalog_entry(k, n, t) for k, n, t in CATALOG])
        app.data.import_users(PROJECT, parquet)
        rule = {"key": "id_$basic_userId", "op": "not_null"}
        app.data.create_segment(PROJECT, SegmentSpec(key="seg_all", name="全部", rule=rule))
        _, token = app.meta.create_token([PROJECT])
    finally:
        app.close()
    bucket = s3_gateway.new_bucket()
    env = {**FAST, **s3_gateway.env(bucket), **meta}
    worker = start_server(worker_dir, tmp_path / "worker.log", env)
    api = None
    try:
        api = start_server(api_dir, tmp_path / "api.log", {**env, "SEGPORT_SERVE_WORKERS": "false"})
        job = submit(worker, token, "seg_all", {"properties": PROPS, "fileFormat": "json"})
        result = wait_for(lambda: (r := job_result(api, token, job["id"]))["stage"] == "FINISH" and r, "FINISH", 120)
        (uri,) = result["uris"]  # type: ignore[index]
        url = f"{api.base_url}/download?file={uri}"
        got = httpx.get(url, headers=auth(token), timeout=60)
        assert got.status_code == 200 and got.content == expected_jsonl(parquet, PROPS)
        part = httpx.get(url, headers={**auth(token), "Range": "bytes=10-19"}, timeout=60)
        assert (part.status_code, part.content) == (206, got.content[10:20])
        for folder in (api_dir, worker_dir):  # neither process kept a copy on its disk
            assert not list(folder.rglob("*UserList*"))
    finally:
        if api is not None:
            stop_server(api)
        stop_server(worker)


def test_the_python_client_downloads_through_a_presigned_redirect(tmp_path: Path, s3_gateway: S3Gateway) -> None:
    from segport.client import Client

    data, token, parquet = make_data_dir(tmp_path, 3000)
    env = {**FAST, **s3_gateway.env(s3_gateway.new_bucket()), "SEGPORT_S3_PRESIGNED_REDIRECT": "true"}
    server = start_server(data, tmp_path / "server.log", env)
    try:
        # the client follows the 302 and must not send its Bearer token to S3 (a second auth method: 400)
        with Client(server.base_url, token) as client:
            (path,) = client.export_segment(PROJECT, "seg_all", PROPS, file_format="json", dest=tmp_path, timeout=60)
        assert path.read_bytes() == expected_jsonl(parquet, PROPS)
    finally:
        stop_server(server)
