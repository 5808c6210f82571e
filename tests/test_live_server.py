"""The seed's flow against a real `segport serve` process over a socket, set up through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    CATALOG_CSV,
    ENGINES,
    PROJECT,
    SEGMENT,
    SEGMENT_RULE,
    USERS,
    start_server,
    stop_server,
    write_users_csv,
)
from tests.expected import expected_csv


def segport(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_seed_example_over_a_socket(tmp_path: Path, engine: str) -> None:
    """Each CLI step and the server are processes of their own; on ClickHouse they share chdb's folder in the
    data dir (SEGPORT_CLICKHOUSE_URL's default), one process at a time."""
    env = {"SEGPORT_ENGINE": engine}
    data = tmp_path / "data"
    (tmp_path / "catalog.csv").write_text(CATALOG_CSV, encoding="utf-8")
    write_users_csv(tmp_path / "users.csv", USERS)
    steps = [
        ("project", "create", PROJECT, "--name", "示例项目"),
        ("catalog", "import", "--project", PROJECT, str(tmp_path / "catalog.csv")),
        ("users", "import", "--project", PROJECT, str(tmp_path / "users.csv")),
        (
            "segment",
            "create",
            "--project",
            PROJECT,
            "--key",
            SEGMENT,
            "--name",
            "51活动用户",
            "--rule",
            json.dumps(SEGMENT_RULE),
        ),
    ]
    for step in steps:
        done = segport(data, *step, env=env)
        assert done.returncode == 0, done.stderr
    token = segport(data, "token", "create", "--project", PROJECT, env=env).stdout.strip().splitlines()[-1]

    server = start_server(data, tmp_path / "server.log", env=env)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = '{"properties": ["ids_$basic_userId", "usr_gender", "tag_rfm"], "fileFormat": "csv", "csvHeaderType": "key"}'
        created = httpx.post(
            f"{server.base_url}/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs",
            headers=headers,
            content=body,
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 30
        while True:
            result = httpx.get(f"{server.base_url}/v1/api/job/result/{job_id}", headers=headers).json()
            if result["stage"] in ("FINISH", "ERROR") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert result["stage"] == "FINISH", result
        download = httpx.get(f"{server.base_url}/download?file={result['uris'][0]}", headers=headers)
        assert download.status_code == 200
        assert download.content == expected_csv(["id_$basic_userId", "usr_gender", "tag_rfm"])
    finally:
        stop_server(server)
