"""GrowingIO's own Python SDK (PyPI ``growingio-tracker``, pinned with hashes in tests/sdk/requirements.lock) sends
to a real `segport serve`: every consumer with every encoder lands in the spool, normalized; a retried request
is stored once; SIGKILL of the API process after a 200 loses nothing.

The SDK runs in a venv of its own (``.venv/sdk``, built once from the lock file and reused while the lock is
unchanged): its protobuf module needs protobuf 3.x, which segport's environment does not pin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from segport.settings import Settings
from segport.store.db import Database
from segport.store.events import decode_payload
from segport.store.models import EventBatchRow
from tests.client_venvs import client_python
from tests.conftest import LiveServer, children, start_server, stop_server, wait_for
from tests.test_crash import FAST

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "tests" / "sdk" / "requirements.lock"
SEND = ROOT / "tests" / "sdk" / "send.py"
SDK_VENV = ROOT / ".venv" / "sdk"
P = "Sdkproj1"


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    return client_python(LOCK, SDK_VENV, what="the SDK")


def cli(data: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, str, str]]:
    data = tmp_path / "data"
    cli(data, "project", "create", P, "--name", "sdk")
    made = json.loads(cli(data, "datasources", "add", "--project", P, "--name", "python sdk", "--json"))
    server = start_server(data, tmp_path / "server.log", {**FAST, "SEGPORT_API_PROCESSES": "1"})
    try:
        yield server, made["projectKey"], made["dataSourceId"]
    finally:
        stop_server(server)


def spooled(data: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every batch in the spool, loaded by the engine or not: (dataSourceId, events)."""
    db = Database(Settings(data_dir=data).resolved_metadata_url())
    try:
        with db.connect() as conn:
            rows = conn.execute(select(EventBatchRow.datasource_id, EventBatchRow.payload).order_by("id")).all()
    finally:
        db.close()
    return [(r.datasource_id, decode_payload(r.payload)) for r in rows]


def send(python: Path, server: LiveServer, key: str, source: str, what: str) -> Any:
    done = subprocess.run(
        [str(python), str(SEND), server.base_url, key, source, what], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_consumer_and_encoder_of_the_sdk_lands_in_the_spool(
    sdk_python: Path, served: tuple[LiveServer, str, str]
) -> None:
    server, key, source = served
    combos = send(sdk_python, server, key, source, "matrix")["sent"]
    assert len(combos) == 12
    batches = spooled(server.data_dir)
    assert {s for s, _ in batches} == {source}
    events = [e for _, evs in batches for e in evs]
    for combo in combos:
        buys = [e for e in events if e["type"] == "CUSTOM" and e["attrs"].get("combo") == combo]
        assert sorted(int(e["attrs"]["i"]) for e in buys) == [0, 1, 2, 3, 4], combo  # each once
        for e in buys:
            assert e["event"] == "buy" and e["user_id"] == f"u-{combo}" and e["device_id"] == f"dev-{combo}"
            assert e["user_key"] is None  # the default login id ($basic_userId)
            assert e["attrs"]["tags"] == "a||b"
            assert e["std"]["platform"] == "python" and e["std"]["sdkVersion"] == "1.0.5"
            assert abs(e["t"] - time.time() * 1000) < 600_000
        [login] = [e for e in events if e["type"] == "LOGIN_USER_ATTRIBUTES" and e["user_id"] == f"{combo}@example.com"]
        assert login["user_key"] == "$email" and login["attrs"] == {"tier": "gold"} and login["event"] is None
        [item] = [e for e in events if e["type"] == "ITEM" and e["std"]["itemId"] == f"p-{combo}"]
        assert item["std"]["itemKey"] == "product" and item["attrs"] == {"color": "red"}
    buffered = [evs for _, evs in batches if any(e["attrs"].get("combo") == "buffered_json" for e in evs)]
    assert max(len(evs) for evs in buffered) == 2  # BufferedConsumer(max_size=2) posts two at a time


def test_a_request_the_sdk_sends_twice_is_stored_once(sdk_python: Path, served: tuple[LiveServer, str, str]) -> None:
    server, key, source = served
    results = send(sdk_python, server, key, source, "replay")
    assert results == {name: [True, True] for name in ("json", "protobuf", "snappy", "snappy_xor")}
    events = [e for _, evs in spooled(server.data_dir) for e in evs]
    assert sorted(e["attrs"]["parser"] for e in events if e["event"] == "retry") == [
        "json",
        "protobuf",
        "snappy",
        "snappy_xor",
    ]


def test_sigkill_of_the_api_process_after_a_200_loses_nothing(served: tuple[LiveServer, str, str]) -> None:
    """Batches are sent without pause while the API process is killed; every batch that got a 200 is in the
    spool once, and the replacement process takes requests again."""
    server, key, source = served
    api = wait_for(lambda: (c := children(server)["api"]) and len(c) == 1 and c[0].pid, "the API process")
    acked: list[int] = []
    failed: list[int] = []
    stop = threading.Event()

    def pump() -> None:
        with httpx.Client(timeout=10) as client:
            seq = 0
            while not stop.is_set():
                seq += 1
                now = int(time.time() * 1000)
                batch = [
                    {"eventType": "CUSTOM", "eventName": "tick", "timestamp": now, "deviceId": f"d{seq}",
                     "attributes": {"seq": str(seq), "j": str(j)}, "dataSourceId": source}
                    for j in range(20)
                ]  # fmt: skip
                try:
                    r = client.post(f"{server.base_url}/v3/projects/{key}/collect?stm={now}", json=batch)
                except httpx.TransportError:
                    failed.append(seq)
                    time.sleep(0.05)
                    continue
                (acked if r.status_code == 200 else failed).append(seq)

    thread = threading.Thread(target=pump)
    thread.start()
    try:
        wait_for(lambda: len(acked) >= 30, "30 acknowledged batches")
        os.kill(int(api), signal.SIGKILL)
        wait_for(lambda: (c := children(server)["api"]) and c[0].pid != api, "a new API process", 30)
        before = len(acked)
        wait_for(lambda: len(acked) >= before + 10, "batches acknowledged by the new API process", 30)
    finally:
        stop.set()
        thread.join(30)
    stored: Counter[int] = Counter()
    for _, events in spooled(server.data_dir):
        seqs = {int(e["attrs"]["seq"]) for e in events}
        assert len(seqs) == 1 and len(events) == 20  # a batch is whole
        stored[seqs.pop()] += 1
    missing = [s for s in acked if stored[s] == 0]
    assert not missing, f"acknowledged but not stored: {missing[:10]}"
    assert set(stored.values()) == {1}
    assert set(stored) <= set(acked) | set(failed)
