"""A real `segport serve`: events posted to the collect endpoint reach the engine process's event store and come back
through E18 within the freshness bound; a batch accepted while the engine process is dead is loaded once when the
supervisor has restarted it (nothing lost, nothing doubled)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from segport.roles.inline import build
from segport.settings import Settings
from segport.store.events import DataSources
from tests.conftest import LiveServer, engine_pid, start_server, stop_server, wait_for
from tests.test_crash import FAST

P = "Live0001"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, str, str, str]]:
    data = tmp_path / "data"
    app = build(Settings(data_dir=data, serve_workers=False))
    try:
        app.meta.create_project(P, "live")
        key, source = DataSources(app.db).add(P, "web")
        _, token = app.meta.create_token([P])
    finally:
        app.close()
    server = start_server(
        data, tmp_path / "server.log", {**FAST, "SEGPORT_API_PROCESSES": "1", "SEGPORT_EVENT_LOAD_INTERVAL_S": "0.2"}
    )
    try:
        yield server, token, key, source
    finally:
        stop_server(server)


def send(server: LiveServer, key: str, source: str, user: str, names: list[str]) -> None:
    now = int(time.time() * 1000)
    body = [
        {
            "eventType": "CUSTOM",
            "timestamp": now - 1000 + i,
            "eventName": name,
            "userId": user,
            "attributes": {"n": str(i)},
            "dataSourceId": source,
            "projectKey": key,
        }
        for i, name in enumerate(names)
    ]
    r = httpx.post(
        f"{server.base_url}/v3/projects/{key}/collect?stm={now}",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def events_of(server: LiveServer, token: str, user: str) -> list[Any]:
    r = httpx.get(
        f"{server.base_url}/v1/api/projects/{P}/users/$basic_userId/{user}/events?order=asc",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    if r.status_code == 400 and r.json()["error"]["code"] == "UNKNOWN_KEY":
        return []  # before the first load the project has no identities at all
    if r.status_code == 503:
        return []  # the engine process is being restarted
    assert r.status_code == 200, r.text
    return list(r.json()["values"])


def test_collected_events_reach_the_store_and_survive_an_engine_restart(
    served: tuple[LiveServer, str, str, str],
) -> None:
    server, token, key, source = served
    started = time.monotonic()
    send(server, key, source, "U1", ["open", "buy"])
    wait_for(lambda: len(events_of(server, token, "U1")) == 2, "the events in the store", 10)
    assert time.monotonic() - started < 5  # the freshness bound with a 0.2 s interval, with room for a slow CI

    first = int(wait_for(lambda: engine_pid(server), "the engine process"))  # type: ignore[call-overload]
    engine = psutil.Process(first)
    os.kill(server.process.pid, signal.SIGSTOP)  # the supervisor cannot restart the engine meanwhile
    try:
        engine.kill()
        wait_for(lambda: engine.status() == psutil.STATUS_ZOMBIE, "the engine to die", 10)
        send(server, key, source, "U1", ["pay"])  # accepted with the engine dead: it is in the spool
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    wait_for(lambda: engine_pid(server) not in (0, first), "a new engine process", 30)
    got = wait_for(lambda: (e := events_of(server, token, "U1")) and len(e) >= 3 and e, "the batch, loaded", 30)
    # Two more loader rounds, each proved by a sentinel batch it loaded (a round loads what was accepted before
    # it began, so each sentinel, sent after the previous one was visible, is loaded by a later round): a batch
    # loaded twice would show by now, however slow the machine.
    for sentinel in ("S1", "S2"):
        send(server, key, source, sentinel, ["ping"])
        wait_for(lambda s=sentinel: len(events_of(server, token, s)) == 1, "a later loader round", 30)
    assert (
        [v["event"] for v in events_of(server, token, "U1")]
        == ["open", "buy", "pay"]
        == [
            v["event"]
            for v in got  # type: ignore[union-attr]
        ]
    )


def test_a_cli_events_import_while_serving_goes_through_the_engine_process(
    served: tuple[LiveServer, str, str, str], tmp_path: Path
) -> None:
    server, token, _, _ = served
    history = tmp_path / "history.csv"
    history.write_text("event,time,userId,amount\nbuy,2026-05-01T10:00:00+08:00,H1,3\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(server.data_dir), "events", "import"]
        + ["--project", P, str(history)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "running server" in done.stderr and "1 of 1 events stored" in done.stdout
    assert [(v["event"], v["attributes"]) for v in events_of(server, token, "H1")] == [("buy", {"amount": "3"})]
    bad = tmp_path / "bad.csv"
    bad.write_text("event,time,userId,amount\nbuy,2026-05-01T10:00:00,H1,4\n", encoding="utf-8")
    refused = subprocess.run(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(server.data_dir), "events", "import"]
        + ["--project", P, str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert "bad.csv: line 2 (row 1): time '2026-05-01T10:00:00' is not ISO 8601 with an offset" in refused.stderr
    assert len(events_of(server, token, "H1")) == 1
