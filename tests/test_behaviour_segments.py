"""Segments with event conditions through a running `segport serve`: created with the admin API and with
`segport segment create --rule`, checked against the project's event catalogue (a 400 naming the part at fault,
nothing stored), computed in the project's time zone, and recomputed when the events change."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from segport.roles.inline import build
from segport.services.events import EventService
from segport.settings import Settings
from tests.conftest import auth, start_server, stop_server

P = "Behave01"
A = f"/admin/v1/projects/{P}"
DAY_MS = 86_400_000


def cli(data: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


def events_csv(path: Path, rows: list[tuple[str, int, str, str]]) -> Path:
    """``(event, time ms, userId, amount)`` rows as an event file."""
    lines = ["event,time,userId,amount"] + [f"{e},{t},{u},{a}" for e, t, u, a in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def error(r: httpx.Response) -> str:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["code"] == "INVALID_RULE", body
    return str(body["error"]["message"])


BAD_RULES: list[tuple[Any, str]] = [
    ({"event": "refund"}, "rule.event: unknown event 'refund' (not in the project's event catalogue)"),
    (
        {"and": [{"key": "usr_x", "op": "is_null"}], "or": []},
        "rule: expected exactly one of 'and', 'or', 'not', or a key/op/value leaf",
    ),
    (
        {
            "or": [
                {"event": "pay"},
                {"sequence": [{"event": "pay", "where": {"key": "amt", "op": "gt", "value": 1}}, {"event": "login"}]},
            ]
        },
        "rule.or[1].sequence[0].where: unknown attribute 'amt'",
    ),
    (
        {"event": "login", "measure": {"sum": "city"}},
        "rule.measure.sum: sum needs a numeric attribute; 'city' is string (count its distinct values with 'distinct')",
    ),
    (
        {"not": {"event": "pay", "time": {"between": ["2026-05-07", "2026-05-01"]}}},
        "rule.not.time.between: the window ends (2026-05-01) before it starts (2026-05-07)",
    ),
    ({"sequence": [{"event": "pay"}]}, "rule.sequence: a sequence is a list of 2 to 10 steps; got 1 step(s)"),
    (
        {"sequence": [{"event": "pay"}] * 11},
        "rule.sequence: a sequence is a list of 2 to 10 steps; got 11 step(s)",
    ),
    (
        {"event": "pay", "where": {"or": [{"key": "amount", "op": "gt", "value": i} for i in range(1000)]}},
        "rule is too large (at most 32 levels and 1000 nodes)",
    ),
]


def setup_project(data: Path, tmp_path: Path, now: int) -> str:
    """Project P (time zone Asia/Shanghai) with events pay (amount: double) and login (city: string); returns an
    admin token."""
    app = build(Settings(data_dir=data, serve_workers=False))
    try:
        app.meta.create_project(P, "行为", "Asia/Shanghai")
        events = EventService(app.meta, app.engine, app.data)
        events.declare(P, "amount", "金额", "double")
        events.import_events(
            P, events_csv(tmp_path / "e.csv", [("pay", now - DAY_MS, "U1", "10"), ("login", now - DAY_MS, "U1", "")])
        )
        (tmp_path / "city.csv").write_text(f"event,time,userId,city\nlogin,{now},U2,北京\n", encoding="utf-8")
        events.import_events(P, tmp_path / "city.csv")
        return app.meta.create_token([], admin=True)[1]
    finally:
        app.close()


def test_event_rules_are_checked_against_the_event_catalogue_and_nothing_is_stored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin = setup_project(data, tmp_path, int(time.time() * 1000))
    server = start_server(data, tmp_path / "server.log")
    try:
        h = auth(admin)
        for rule, message in BAD_RULES:
            body = {"key": "seg_bad", "name": "坏", "rule": rule}
            assert error(httpx.post(server.base_url + A + "/segments", headers=h, json=body)) == message
            # the rule as a JSON string takes the same path
            body["rule"] = json.dumps(rule)
            assert error(httpx.post(server.base_url + A + "/segments", headers=h, json=body)) == message
        assert httpx.get(server.base_url + A + "/segments", headers=h).json() == []
        # the command line, through the running server
        bad = cli(
            data, "segment", "create", "--project", P, "--key", "seg_bad", "--name", "坏",
            "--rule", json.dumps(BAD_RULES[2][0]), ok=False,
        )  # fmt: skip
        assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == f"error: {BAD_RULES[2][1]}"
        assert httpx.get(server.base_url + A + "/segments", headers=h).json() == []
    finally:
        stop_server(server)
    # and on the data dir itself, without a server
    bad = cli(
        data, "segment", "create", "--project", P, "--key", "seg_bad", "--name", "坏",
        "--rule", '{"not": {"event": "pay", "time": {"last_days": 0}}}', ok=False,
    )  # fmt: skip
    assert bad.stderr.strip() == "error: rule.not.time.last_days: expected a whole number of days from 1 to 3660; got 0"
    assert "seg_bad" not in cli(data, "segment", "list", "--project", P).stdout
