"""`segport tag ...` on a data dir, and through a running `segport serve` (real HTTP, the computation in the engine
process through its operation compute_tag): create, list, show, recompute, delete; the tag then listed by E5,
recomputed by E15 and exported through the seed's export over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from segport.roles.inline import build
from segport.settings import Settings
from tests.conftest import PROJECT, auth, csv_rows, seed_project, start_server, stop_server

P = "Tagcli01"
SUM = '{"type": "AGGREGATED", "event": "pay", "measure": {"sum": "amount"}, "time": {"last_days": 7}}'


def cli(data: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "segport.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SEGPORT_DATA_DIR": str(data)},
    )
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


def events_file(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    now = int(time.time() * 1000)
    lines = ["event,time,userId,amount", *(f"{e},{now - 3_600_000},{u},{a}" for e, u, a in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tag_commands_on_a_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli(data, "project", "create", P, "--name", "tags")
    cli(data, "events", "keys", "add", "--project", P, "amount", "--type", "int")
    cli(
        data,
        "events",
        "import",
        "--project",
        P,
        str(events_file(tmp_path / "e.csv", [("pay", "U1", 5), ("pay", "U1", 7), ("pay", "U2", 1)])),
    )
    out = cli(
        data, "tag", "create", "--project", P, "--key", "tag_pay7", "--name", "7天支付", "--definition", SUM
    ).stdout
    assert out.startswith("created tag_pay7\t7天支付\tAGGREGATED\tINT\tFINISH, 2 users"), out
    listed = json.loads(cli(data, "tag", "list", "--project", P, "--json").stdout)
    assert [(t["key"], t["type"], t["valueType"]["type"]) for t in listed] == [("tag_pay7", "AGGREGATED", "INT")]
    # a bad definition: exit 2, the part at fault named, nothing stored
    bad = cli(
        data,
        "tag",
        "create",
        "--project",
        P,
        "--key",
        "tag_bad",
        "--name",
        "x",
        "--definition",
        '{"type": "AGGREGATED", "event": "refund"}',
        ok=False,
    )
    assert bad.returncode == 2 and "definition.event: unknown event 'refund'" in bad.stderr
    assert [t["key"] for t in json.loads(cli(data, "tag", "list", "--project", P, "--json").stdout)] == ["tag_pay7"]
    again = json.loads(cli(data, "tag", "recompute", "--project", P, "tag_pay7", "--json").stdout)
    assert (again["detector"]["stage"], again["detector"]["totalUsers"]) == ("FINISH", 2)
    assert cli(data, "tag", "delete", "--project", P, "tag_pay7").stdout.strip() == "deleted tag tag_pay7"


def test_tags_through_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = build(Settings(data_dir=data, serve_workers=False))
    seeded = seed_project(app, tmp_path)
    app.close()
    server = start_server(data, tmp_path / "server.log")
    try:
        h = auth(seeded.token)
        cli(data, "events", "keys", "add", "--project", PROJECT, "amount", "--type", "int")
        cli(
            data,
            "events",
            "import",
            "--project",
            PROJECT,
            str(events_file(tmp_path / "e.csv", [("pay", "C001", 9), ("pay", "C002", 3)])),
        )
        out = cli(
            data, "tag", "create", "--project", PROJECT, "--key", "tag_pay7", "--name", "7天支付", "--definition", SUM
        )
        assert "FINISH, 7 users" in out.stdout, out.stdout + out.stderr  # the server holds the data dir's lock
        shown = json.loads(cli(data, "tag", "show", "--project", PROJECT, "tag_pay7").stdout)
        assert shown["definition"] == json.loads(SUM) and shown["creator"].startswith("admin token")
        listed = httpx.get(f"{server.base_url}/v1/api/projects/{PROJECT}/user_tags", headers=h).json()["values"]
        assert {t["key"]: (t["type"], t["valueType"]["type"]) for t in listed} == {
            "tag_rfm": ("DATA_SET_ATTRIBUTE", "STRING"),
            "tag_pay7": ("AGGREGATED", "INT"),
        }
        cli(data, "events", "import", "--project", PROJECT, str(events_file(tmp_path / "f.csv", [("pay", "C002", 4)])))
        r = httpx.post(f"{server.base_url}/v1/api/projects/{PROJECT}/user_tags/tag_pay7/computes", headers=h)
        assert r.status_code == 200 and "recomputed" in r.json()["message"], r.text
        job = httpx.post(
            f"{server.base_url}/v1/api/projects/{PROJECT}/user_tags/tag_pay7/export_jobs",
            headers=h,
            json={"properties": ["id_$basic_userId", "tag_pay7"]},
        ).json()
        deadline = time.monotonic() + 60
        while (result := httpx.get(f"{server.base_url}/v1/api/job/result/{job['id']}", headers=h).json())[
            "stage"
        ] != "FINISH":
            assert result["stage"] in ("NONE", "RUNNING") and time.monotonic() < deadline, result
            time.sleep(0.2)
        rows = csv_rows(httpx.get(f"{server.base_url}/download?file=" + result["uris"][0], headers=h).content)
        got = {r[1]: r[2] for r in rows[1:]}
        assert got["C001"] == "9" and got["C002"] == "7" and got["C003"] == "0" and len(got) == 7
    finally:
        stop_server(server)
