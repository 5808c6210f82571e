"""The whole service with its metadata and job queue on PostgreSQL: the seed's flow over HTTP, and
`segport worker` processes sharing one queue."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient

from segport.app import open_stores
from segport.domain.jobs import Stage, TargetKind
from segport.roles.inline import build, create_app
from segport.services.exports import ExportRequest
from segport.settings import Settings
from segport.store.models import JobRow
from segport.store.queue import job_files
from segport.worker import Worker
from tests.conftest import COLUMNS, PROJECT, SEGMENT, seed_project
from tests.expected import expected_csv, expected_jsonl, parse_jsonl
from tests.test_seed_api import SEED_EXAMPLE_1, run_export


def _dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")


def test_seed_flow_runs_end_to_end_with_metadata_on_postgres(tmp_path: Path, pg_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", metadata_url=pg_url, serve_workers=False)
    app = build(settings)
    try:
        seeded = seed_project(app, tmp_path)
        with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as client:
            worker = Worker(app, threads=1)
            job, result, content = run_export(client, worker, seeded.token, SEED_EXAMPLE_1)
            assert content == expected_csv(["id_$basic_userId", "usr_gender", "tag_rfm"])
            _, _, jsonl = run_export(client, worker, seeded.token, {"properties": ["usr_city"], "fileFormat": "json"})
            assert parse_jsonl(jsonl) == expected_jsonl(["usr_city"])
            again = client.post(
                f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs",
                headers={"Authorization": f"Bearer {seeded.token}"},
                content=SEED_EXAMPLE_1,
            )
            assert again.json()["id"] == job["id"]  # the finished job is reused, looked up in PostgreSQL
            other = client.get(
                f"/v1/api/job/result/{job['id']}", headers={"Authorization": f"Bearer {seeded.other_token}"}
            )
            assert other.status_code == 404 and other.json()["error"]["code"] == "JOB_NOT_FOUND"
    finally:
        app.close()
    assert not (settings.data_dir / "meta.sqlite").exists()  # nothing fell back to the embedded store
    with psycopg.connect(_dsn(pg_url)) as conn:
        row = conn.execute("SELECT stage, attempts, rows FROM jobs WHERE id = %s", (job["id"],)).fetchone()
    assert row == ("FINISH", 1, 6)
    assert result["stage"] == "FINISH"


def test_two_worker_processes_run_each_of_40_jobs_exactly_once(tmp_path: Path, pg_url: str) -> None:
    # Two data dirs holding the same profile file: as two hosts would, each with its own copy.
    dirs = [tmp_path / "host-a", tmp_path / "host-b"]
    app = build(Settings(data_dir=dirs[0], metadata_url=pg_url, serve_workers=False))
    try:
        seeded = seed_project(app, tmp_path)
        who = app.meta.authenticate(seeded.token)
        keys = [c for c in COLUMNS if c != "id_$anonymous_user"]
        by_id: dict[str, JobRow] = {}  # 40 different requests (7 keys: 21 pairs, then triples)
        for props in itertools.chain(itertools.combinations(keys, 2), itertools.combinations(keys, 3)):
            job = app.exports.submit(who, PROJECT, TargetKind.SEGMENT, SEGMENT, ExportRequest(properties=list(props)))
            by_id[job.id] = job
            if len(by_id) == 40:
                break
        jobs = list(by_id.values())
    finally:
        app.close()  # the profile file is single-process: let the workers open it
    assert len(jobs) == 40
    shutil.copytree(dirs[0], dirs[1], ignore=shutil.ignore_patterns("results"))

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "segport.cli", "worker", "--once"],
            env={**os.environ, "SEGPORT_DATA_DIR": str(d), "SEGPORT_METADATA_URL": pg_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in dirs
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ran = [int(re.fullmatch(r"ran (\d+) jobs\n", out).group(1)) for out, _ in outputs]  # type: ignore[union-attr]
    assert sum(ran) == 40, ran

    stores = open_stores(Settings(data_dir=tmp_path / "reader", metadata_url=pg_url))
    try:
        rows = [stores.queue.get(j.id) for j in jobs]
    finally:
        stores.close()
    assert {(r.stage, r.attempts) for r in rows} == {(Stage.FINISH.value, 1)}
    for r in rows:  # each job's files were published by one worker only
        holders = [d for d in dirs if (d / "results" / r.name).is_dir()]
        assert len(holders) == 1, (r.name, holders)
        assert sorted(p.name for p in holders[0].joinpath("results", r.name).iterdir()) == sorted(job_files(r))
    assert [len(list((d / "results").glob("DES-*"))) for d in dirs] == ran
