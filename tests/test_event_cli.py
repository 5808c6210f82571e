"""`segport events import` and `segport events keys add|list` on a data dir, as a user runs them; the console's
events page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from segport.roles.inline import create_app
from segport.services.events import EventService
from segport.store.events import DataSources
from tests.conftest import OTHER_PROJECT, PROJECT, Seeded
from tests.test_console import sign_in

P = "Cliev001"


def cli(data: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


def test_events_import_and_keys_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli(data, "project", "create", P, "--name", "cli")
    out = cli(data, "events", "keys", "add", "--project", P, "amount", "--name", "金额", "--type", "int").stdout
    assert "amount (金额): int" in out
    good = tmp_path / "e.csv"
    good.write_text("event,time,userId,amount,city\nbuy,2026-05-01T10:00:00+08:00,C1,3,北京\n", encoding="utf-8")
    out = cli(data, "events", "import", "--project", P, str(good)).stdout
    assert "1 of 1 events stored, 1 new users" in out and "new attribute city" in out
    listed = cli(data, "events", "keys", "list", "--project", P).stdout.splitlines()
    assert listed == ["amount\t金额\tint\tdeclared", "city\tcity\tstring\tseen"]
    bad = tmp_path / "bad.csv"
    bad.write_text("event,time,userId,amount\nbuy,1777600000000,C1,1\nbuy,1777600000000,C1,x\n", encoding="utf-8")
    refused = cli(data, "events", "import", "--project", P, str(bad), ok=False)
    assert "bad.csv: line 3 (row 2): attribute amount: value 'x' is not a valid int" in refused.stderr
    changed = cli(data, "events", "keys", "add", "--project", P, "amount", "--type", "string", ok=False)
    assert "stored as int" in changed.stderr


def test_the_console_shows_a_project_s_events_and_data_sources(seeded: Seeded, tmp_path: Path) -> None:
    app = seeded.app
    key, source = DataSources(app.db).add(PROJECT, "网站")
    ev = EventService(app.meta, app.engine, app.data)
    ev.declare(PROJECT, "amount", "金额", "int")
    csv = tmp_path / "e.csv"
    csv.write_text("event,time,userId,amount,city\nbuy,1777600000000,C001,3,北京\n", encoding="utf-8")
    ev.import_events(PROJECT, csv)
    with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as c:
        sign_in(c, seeded.token)
        page = c.get(f"/console/p/{PROJECT}/events")
        assert page.status_code == 200
        for shown in ("<code>buy</code>", "<code>amount</code>", "金额", "declared", "seen", key, source, "网站"):
            assert shown in page.text, shown
        assert c.get(f"/console/p/{PROJECT}/segments").text.count(f"/console/p/{PROJECT}/events") == 1
        assert c.get(f"/console/p/{OTHER_PROJECT}/events").status_code == 404
