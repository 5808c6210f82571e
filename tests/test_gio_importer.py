"""GrowingIO's own metadata reader (PyPI ``gio-importer``, ``export_saas_meta``; pinned with hashes in
tests/gio_importer/requirements.lock) reads segport's metadata endpoints over real HTTP and writes its export.

It runs in a venv of its own (``.venv/gio``, built once from the lock file and reused while the lock is unchanged),
installed with ``--no-deps``: its declared dependencies (pyhive, sasl, …) are not needed for the export."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from segport.roles.inline import build
from segport.services.data import DataService
from segport.services.events import EventService
from segport.settings import Settings
from tests.client_venvs import client_python
from tests.conftest import CATALOG_CSV, LiveServer, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "tests" / "gio_importer" / "requirements.lock"
SCRIPT = ROOT / "tests" / "gio_importer" / "export_meta.py"
VENV = ROOT / ".venv" / "gio"
P = "Meta0001"


@pytest.fixture(scope="session")
def gio_python() -> Path:
    return client_python(LOCK, VENV, what="gio-importer", no_deps=True)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    data = tmp_path / "data"
    app = build(Settings(data_dir=data, serve_workers=False))
    try:
        app.meta.create_project(P, "元数据")
        DataService(app.meta, app.engine).import_catalog_csv(P, CATALOG_CSV)
        events = EventService(app.meta, app.engine, app.data)
        events.declare(P, "amount", "金额", "int", "order amount")
        csv = tmp_path / "e.csv"
        csv.write_text(
            "event,time,userId,amount,channel\nbuy,2026-05-01T10:00:00+08:00,C1,3,app\nsignup,1777600000000,C2,,web\n",
            encoding="utf-8",
        )
        events.import_events(P, csv)
        _, token = app.meta.create_token([P])
    finally:
        app.close()
    server = start_server(data, tmp_path / "server.log", {"SEGPORT_API_PROCESSES": "1"})
    try:
        yield server, token
    finally:
        stop_server(server)


def test_gio_importer_exports_segport_s_metadata(
    gio_python: Path, served: tuple[LiveServer, str], tmp_path: Path
) -> None:
    server, token = served
    out = tmp_path / "meta.json"
    done = subprocess.run(
        [str(gio_python), str(SCRIPT), server.base_url + "/", f"Bearer {token}", P, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    meta = json.loads(out.read_text(encoding="utf-8"))
    assert {e["key"] for e in meta["events"]} == {"buy", "signup"}
    assert {(v["key"], v["name"], v["valueType"]) for v in meta["event_variables"]} == {
        ("amount", "金额", "int"),
        ("channel", "channel", "string"),
    }
    assert {"gender", "city", "age"} <= {v["key"] for v in meta["user_variables"]}
    bound = {e["key"]: [a["key"] for a in e["attributes"]] for e in meta["bind_event_variables"]}
    assert bound == {"buy": ["amount", "channel"], "signup": ["channel"]}
