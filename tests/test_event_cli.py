"""`segport events import` and `segport events keys add|list` on a data dir, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
