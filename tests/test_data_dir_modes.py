"""The data dir is its user's alone, whatever the umask: folder 0700, files 0600; one others may write is refused.

Run through the real CLI and a real `segport serve`, each started under umask 022 (the usual default, which on
main left the folder 0755 and every file 0644: readable by any local user)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import (
    CATALOG_CSV,
    PROJECT,
    SEGMENT,
    SEGMENT_RULE,
    USERS,
    start_server,
    stop_server,
    write_users_csv,
)


def _umask_022() -> None:
    os.umask(0o022)


def segport(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SEGPORT_ENGINE": "duckdb"},
        preexec_fn=_umask_022,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_are_private_under_umask_022(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "catalog.csv").write_text(CATALOG_CSV, encoding="utf-8")
    write_users_csv(tmp_path / "users.csv", USERS)
    for step in [
        ("project", "create", PROJECT, "--name", "p"),
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
            "s",
            "--rule",
            json.dumps(SEGMENT_RULE),
        ),
    ]:
        done = segport(data, *step)
        assert done.returncode == 0, done.stderr
    token = segport(data, "token", "create", "--project", PROJECT).stdout.strip().splitlines()[-1]

    server = start_server(data, tmp_path / "server.log", env={"SEGPORT_ENGINE": "duckdb"}, preexec_fn=_umask_022)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(
            f"{server.base_url}/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs",
            headers=headers,
            json={"properties": ["usr_gender"], "fileFormat": "csv"},
        )
        assert created.status_code == 200, created.text
        deadline = time.monotonic() + 60
        while True:
            result = httpx.get(f"{server.base_url}/v1/api/job/result/{created.json()['id']}", headers=headers).json()
            if result["stage"] in ("FINISH", "ERROR") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert result["stage"] == "FINISH", result
    finally:
        stop_server(server)

    assert mode(data) == 0o700
    assert mode(data / "meta.sqlite") == 0o600
    assert mode(data / "profiles.duckdb") == 0o600
    results = [p for p in (data / "results").rglob("*") if p.is_file()]
    assert results, "the export left no result file"
    for path in results:
        assert mode(path) == 0o600, path
    for path in data.rglob("*"):
        if not path.is_symlink():
            assert mode(path) & 0o077 == 0, f"{path} is {mode(path):04o}"


def test_an_existing_data_dir_others_may_read_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    done = segport(data, "project", "create", PROJECT, "--name", "p")
    assert done.returncode == 0, done.stderr
    assert mode(data) == 0o700


def test_a_data_dir_others_may_write_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    for args in [("project", "list"), ("serve", "--host", "127.0.0.1", "--port", "0")]:
        done = segport(data, *args, timeout=60)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: data dir ") and "chmod 700" in lines[0], lines
        assert "0777" in lines[0]
    assert mode(data) == 0o777  # refused, not changed
    assert list(data.iterdir()) == []


def test_a_group_writable_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o770)
    done = segport(data, "project", "list")
    assert done.returncode != 0 and "group or others" in done.stderr
