"""The operator CLI on a real data dir: happy paths and one-line errors that change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segport.app import open_stores
from segport.cli import cli
from segport.engine.base import Target
from segport.roles.inline import build
from segport.services.data import SegmentSpec
from segport.settings import Settings
from tests.conftest import CATALOG_CSV, PROJECT, USERS, write_users_csv

runner = CliRunner()


def run(data: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["--data-dir", str(data), *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    assert run(d, "project", "create", PROJECT, "--name", "示例项目")[0] == 0
    (tmp_path / "catalog.csv").write_text(CATALOG_CSV, encoding="utf-8")
    assert run(d, "catalog", "import", "--project", PROJECT, str(tmp_path / "catalog.csv"))[0] == 0
    return d


def test_token_create_prints_the_token_last_and_it_works(data: Path) -> None:
    code, out, _ = run(data, "token", "create", "--project", PROJECT)
    assert code == 0
    token = out.strip().splitlines()[-1]
    stores = open_stores(Settings(data_dir=data))
    try:
        assert stores.meta.authenticate(token).can_see(PROJECT)
    finally:
        stores.close()


def test_project_create_rejects_a_bad_id_in_one_line(tmp_path: Path) -> None:
    code, out, err = run(tmp_path / "d", "project", "create", "bad id!", "--name", "x")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: project id")


def test_users_import_reports_counts(data: Path, tmp_path: Path) -> None:
    code, out, _ = run(data, "users", "import", "--project", PROJECT, str(write_users_csv(tmp_path / "u.csv", USERS)))
    assert code == 0, out
    assert f"{len(USERS)} rows read, {len(USERS)} users inserted, 0 updated" in out


def test_a_bad_value_rejects_the_whole_import_and_names_row_key_value(data: Path, tmp_path: Path) -> None:
    run(data, "users", "import", "--project", PROJECT, str(write_users_csv(tmp_path / "u.csv", USERS[:2])))
    bad = [*USERS, {"id_$basic_userId": "C999", "usr_age": "forty"}]
    code, _, err = run(data, "users", "import", "--project", PROJECT, str(write_users_csv(tmp_path / "bad.csv", bad)))
    assert code == 2
    assert err.strip().splitlines()[-1] == f"error: row {len(bad)}: key usr_age: value 'forty' is not a valid int"
    app = build(Settings(data_dir=data))
    try:
        everyone = {"key": "id_$basic_userId", "op": "not_null"}
        app.data.create_segment(PROJECT, SegmentSpec(key="seg_all", name="all", rule=everyone))
        assert app.engine.count(PROJECT, Target("segment", "seg_all")) == 2  # the first import only
    finally:
        app.close()


def test_segment_from_members_reports_unmatched_ids(data: Path, tmp_path: Path) -> None:
    run(data, "users", "import", "--project", PROJECT, str(write_users_csv(tmp_path / "u.csv", USERS)))
    ids = tmp_path / "ids.txt"
    ids.write_text("C001\nC004\nC404\n\nC001\n", encoding="utf-8")
    code, out, err = run(
        data,
        "segment",
        "create",
        "--project",
        PROJECT,
        "--key",
        "seg_list",
        "--name",
        "名单",
        "--members",
        str(ids),
        "--identity",
        "id_$basic_userId",
    )
    assert code == 0, err
    assert "2 users, 1 ids matched no user" in out


def test_segment_with_an_unknown_key_is_refused(data: Path) -> None:
    rule = json.dumps({"key": "usr_nope", "op": "eq", "value": "x"})
    code, _, err = run(
        data, "segment", "create", "--project", PROJECT, "--key", "seg_bad", "--name", "x", "--rule", rule
    )
    assert code == 2
    assert "unknown key 'usr_nope'" in err
    assert run(data, "segment", "list", "--project", PROJECT)[1] == ""


def test_a_profile_file_held_by_another_process_is_busy_not_a_failed_job(data: Path, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('ok', flush=True); time.sleep(60)",
            str(data / "profiles.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        code, _, err = run(
            data, "users", "import", "--project", PROJECT, str(write_users_csv(tmp_path / "u.csv", USERS))
        )
        assert code == 5
        assert err.strip().splitlines()[-1].startswith("error: the profile database")
        assert "in use by another process" in err
    finally:
        holder.kill()
        holder.wait()
