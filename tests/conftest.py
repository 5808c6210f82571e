"""Shared fixtures: a real data dir (SQLite + DuckDB files) per test, an in-process HTTP client, and a
seeded project whose values include every awkward case the file formats must survive."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.roles.inline import build, create_app
from segport.services.data import SegmentSpec
from segport.settings import Settings
from segport.worker import Worker
from tests.pg_support import pg_cluster, pg_url  # noqa: F401  (fixtures: a throwaway PostgreSQL server)
from tests.s3_support import own_s3_gateway, s3_env, s3_gateway  # noqa: F401  (fixtures: a real S3 server)

PROJECT = "WlGk4Daj"
OTHER_PROJECT = "Other001"

CATALOG_CSV = """key,name,type
id_$basic_userId,用户ID,string
id_$anonymous_user,匿名用户ID,string[]
usr_gender,性别,string
usr_city,城市,string
usr_age,年龄,int
usr_score,积分,double
usr_since,注册日期,date
tag_rfm,会员等级,string
"""

# Every awkward value the CSV/JSON writers must get right. None = missing (empty cell in the CSV file).
USERS: list[dict[str, str | None]] = [
    {
        "id_$basic_userId": "C001",
        "usr_gender": "男",
        "usr_city": "北京",
        "usr_age": "30",
        "tag_rfm": "高",
        "usr_score": "1.5",
        "usr_since": "2021-03-05",
        "id_$anonymous_user": "d1||d2",
    },
    {"id_$basic_userId": "C002", "usr_gender": None, "usr_city": "上海, 浦东", "usr_age": "25", "tag_rfm": "低"},
    {"id_$basic_userId": "C003", "usr_gender": "女", "usr_city": 'say "hi"', "usr_age": None, "tag_rfm": None},
    {"id_$basic_userId": "C004", "usr_gender": "", "usr_city": "line1\nline2", "usr_age": "41", "tag_rfm": "中"},
    {
        "id_$basic_userId": "C005",
        "usr_gender": "  spaced  ",
        "usr_city": "=SUM(A1:A2)",
        "usr_age": "19",
        "tag_rfm": "高",
    },
    {
        "id_$basic_userId": "C006",
        "usr_gender": "男",
        "usr_city": "-1+2",
        "usr_age": "52",
        "tag_rfm": "中",
        "usr_score": "-3.25",
        "id_$anonymous_user": "d9",
    },
    {"id_$basic_userId": "C007", "usr_gender": "女", "usr_city": "广州", "usr_age": "33", "tag_rfm": None},
]
COLUMNS = [
    "id_$basic_userId",
    "id_$anonymous_user",
    "usr_gender",
    "usr_city",
    "usr_age",
    "usr_score",
    "usr_since",
    "tag_rfm",
]
SEGMENT = "seg_51activity"
SEGMENT_NAME = "51活动用户"
SEGMENT_RULE = {"not": {"key": "usr_age", "op": "gte", "value": 50}}  # everyone but C006 (52); C003 has no age


def write_users_csv(path: Path, users: list[dict[str, str | None]], columns: list[str] = COLUMNS) -> Path:
    """Write users as a CSV segport imports: None is an empty unquoted field, "" is a quoted empty string."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(",".join(columns) + "\n")
        for user in users:
            cells = []
            for col in columns:
                value = user.get(col)
                cells.append("" if value is None else '"' + value.replace('"', '""') + '"')
            f.write(",".join(cells) + "\n")
    return path


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(data.decode("utf-8").splitlines(keepends=True)))


@dataclass
class Seeded:
    app: App
    token: str
    other_token: str
    admin_token: str


@pytest.fixture
def engine_name() -> str:
    """The profile engine the app fixtures build: DuckDB. A module that overrides this fixture with
    ``params=ENGINES`` (tests/test_engines.py) runs its tests on every engine."""
    return "duckdb"


ENGINES = ["duckdb", "clickhouse"]


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One chdb folder for the session: chdb runs one ClickHouse engine per process, on one folder, so each
    test gets a database of its own in it instead."""
    return tmp_path_factory.mktemp("chdb")


def engine_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings that put a test on the engine its ``engine_name`` fixture names (ClickHouse: a database
    of its own in the session's chdb folder)."""
    if request.getfixturevalue("engine_name") != "clickhouse":
        return {}
    folder = request.getfixturevalue("chdb_dir")
    return {"engine": "clickhouse", "clickhouse_url": f"chdb://{folder}?database=t_{uuid.uuid4().hex[:12]}"}


@pytest.fixture(scope="session")
def chdb_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A stand-in for a ClickHouse server (tests/chdb_http.py: chdb behind a thin HTTP front), in a process of
    its own with its own folder; yields its base URL. Stopped by its PID."""
    folder = tmp_path_factory.mktemp("chdb-http")
    port = free_port()
    log = open(folder / "log", "wb")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.chdb_http", str(folder / "data"), str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/ping", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the chdb HTTP stand-in did not start:\n{(folder / 'log').read_text()}")
        time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        serve_workers=False,
        heartbeat_s=0.2,
        lease_s=5,
        poll_interval_s=0.2,
        **engine_settings(request),
    )


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, str, str]]:
    """The seeded data dir, built once per test session; each test that asks for `seeded` gets a copy."""
    base = tmp_path_factory.mktemp("seeded-template")
    application = build(Settings(data_dir=base / "data", serve_workers=False))
    try:
        s = seed_project(application, base)
    finally:
        application.close()
    return base / "data", (s.token, s.other_token, s.admin_token)


@pytest.fixture
def app(settings: Settings, request: pytest.FixtureRequest) -> Iterator[App]:
    seed_fresh = False
    if "seeded" in request.fixturenames:
        if settings.engine == "duckdb":  # the template's DuckDB file is copied with its data dir
            template, _ = request.getfixturevalue("seeded_template")
            shutil.copytree(template, settings.data_dir)
        else:  # profiles live in ClickHouse: seed this test's own database
            seed_fresh = True
    application = build(settings)
    if seed_fresh:
        request.node.stash[_SEEDED] = seed_project(application, settings.data_dir.parent)
    yield application
    application.close()


_SEEDED = pytest.StashKey["Seeded"]()


def seed_project(app: App, tmp_path: Path) -> Seeded:
    app.meta.create_project(PROJECT, "示例项目")
    app.data.import_catalog_csv(PROJECT, CATALOG_CSV)
    app.data.import_users(PROJECT, write_users_csv(tmp_path / "users.csv", USERS))
    app.data.create_segment(PROJECT, SegmentSpec(key=SEGMENT, name=SEGMENT_NAME, rule=SEGMENT_RULE))
    app.meta.create_project(OTHER_PROJECT, "另一个项目")
    app.data.import_catalog_csv(OTHER_PROJECT, CATALOG_CSV)
    app.data.import_users(OTHER_PROJECT, write_users_csv(tmp_path / "other.csv", USERS[:2]))
    app.data.create_segment(OTHER_PROJECT, SegmentSpec(key=SEGMENT, name="其他", rule=SEGMENT_RULE))
    _, token = app.meta.create_token([PROJECT])
    _, other = app.meta.create_token([OTHER_PROJECT])
    _, admin = app.meta.create_token([], admin=True)
    return Seeded(app, token, other, admin)


@pytest.fixture
def seeded(app: App, request: pytest.FixtureRequest) -> Seeded:
    """Project WlGk4Daj (USERS, segment seg_51activity) and Other001, with a token for each and an admin token."""
    fresh = request.node.stash.get(_SEEDED, None)
    if fresh is not None:
        return fresh
    _, (token, other, admin) = request.getfixturevalue("seeded_template")
    return Seeded(app, token, other, admin)


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def worker(app: App) -> Worker:
    return Worker(app, threads=1)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log: Path


def start_server(
    data_dir: Path,
    log: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> LiveServer:
    """Start `segport serve` as a real uvicorn process and wait until it answers.

    ``preexec_fn`` runs in the child before it starts (e.g. to set resource limits)."""
    port = port or free_port()
    full_env = {**os.environ, "SEGPORT_DATA_DIR": str(data_dir), **(env or {})}
    logf = open(log, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", "segport.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=full_env,
        stdout=logf,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec_fn,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90  # a shared CI machine: `serve` starts an engine and API processes
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        try:
            httpx.get(base + "/openapi.json", timeout=1)
            return LiveServer(base, proc, data_dir, log)
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


def stop_server(server: LiveServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def wait_for(check: Callable[[], object], what: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --- looking at a live server mid-work ----------------------------------------------------------------
# A test that sees a job "in the middle" of something (RUNNING, writing, uploading) and then acts on it must
# not assume it is still there when it acts: a fast machine finishes the work in between, or passes through the
# state between two looks. Hold the work at a hold point instead (segport/testing_hooks.py, e.g.
# `export-file-written`, `s3-part-sent`), or kill it at a pause point, and act once `pid_at` sees its pid file.


def pid_at(marker: Path, what: str, timeout: float = 120, *, alive: subprocess.Popen | None = None) -> int:
    """The pid a process wrote to ``marker`` on reaching a pause point or a hold point (testing_hooks.py writes
    it whole); with ``alive``, a process that ended before reaching it fails the wait at once."""

    def reached() -> int:
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the process ended (exit {alive.returncode}) before {what}")
        return int(marker.read_text(encoding="utf-8")) if marker.exists() else 0

    return wait_for(reached, what, timeout)  # type: ignore[return-value]


def children(server: LiveServer) -> dict[str, list[psutil.Process]]:
    """The supervisor's live children by role: the engine is the one holding the DuckDB file open."""
    found: dict[str, list[psutil.Process]] = {"engine": [], "api": []}
    for child in psutil.Process(server.process.pid).children():
        try:
            files = {Path(f.path).name for f in child.open_files()}
        except psutil.Error:
            continue
        found["engine" if "profiles.duckdb" in files else "api"].append(child)
    return found


def engine_pid(server: LiveServer) -> int:
    engines = children(server)["engine"]
    return engines[0].pid if len(engines) == 1 else 0


def process_tree(server: LiveServer) -> list[psutil.Process]:
    """The server's processes, children first (the supervisor restarts nothing while it is stopped last)."""
    parent = psutil.Process(server.process.pid)
    return [*parent.children(recursive=True), parent]
