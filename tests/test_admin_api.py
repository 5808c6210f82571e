"""The admin API: auth, every endpoint, upload limits, loading while serving, and snapshot-consistent exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.engine.duckdb import writer as duckdb_writer
from segport.roles.inline import build, create_app
from segport.settings import Settings
from segport.worker import Worker
from tests.conftest import PROJECT, SEGMENT, Seeded, auth, csv_rows, start_server, stop_server, write_users_csv

ID = "id_$basic_userId"
A = "/admin/v1/projects/" + PROJECT
PAD = "-" + "x" * 30  # longer rows: a slower COPY, so the import surely lands while it runs


def err(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    return str(body["error"]["message"])


def test_admin_api_needs_an_admin_token(client: TestClient, seeded: Seeded) -> None:
    err(client.get(A + "/catalog"), 401, "UNAUTHORIZED")
    assert "admin token" in err(client.get(A + "/catalog", headers=auth(seeded.token)), 403, "FORBIDDEN")
    assert client.get(A + "/catalog", headers=auth(seeded.admin_token)).status_code == 200
    assert "/admin/v1/projects/{project_id}/users/import" in client.get("/openapi.json").json()["paths"]


def test_catalog_endpoints(client: TestClient, seeded: Seeded) -> None:
    h = auth(seeded.admin_token)
    r = client.post(A + "/catalog", headers=h, json={"key": "usr_vip", "name": "会员", "type": "int"})
    assert r.status_code == 201 and r.json()["type"] == "int"
    r = client.patch(A + "/catalog/usr_vip", headers=h, json={"name": "VIP", "description": "等级"})
    assert (r.json()["name"], r.json()["description"]) == ("VIP", "等级")
    r = client.post(
        A + "/catalog/import",
        headers={**h, "Content-Type": "text/csv"},
        content="key,name,type\nusr_vip,VIP2,int\ntag_new,新,string[]\n".encode(),
    )
    assert r.json() == {"added": 1, "updated": 1}
    keys = {e["key"]: e for e in client.get(A + "/catalog", headers=h).json()}
    assert keys["tag_new"]["type"] == "string[]" and keys["usr_vip"]["name"] == "VIP2"
    assert client.delete(A + "/catalog/tag_new", headers=h).status_code == 204
    assert "seg_51activity" in err(client.delete(A + "/catalog/usr_age", headers=h), 409, "KEY_IN_USE")
    err(client.post(A + "/catalog", headers=h, json={"key": "bad key", "type": "int"}), 400, "INVALID_KEY")
    err(client.post(A + "/catalog", headers=h, json={"key": "usr_vip", "type": "string"}), 409, "CONFLICT")
    err(client.post(A + "/catalog", headers=h, json={"key": "usr_z", "type": "blob"}), 400, "INVALID_KEY")
    err(client.post(A + "/catalog", headers=h, content=b"{nope"), 400, "INVALID_BODY")
    err(client.patch(A + "/catalog/usr_nope", headers=h, json={"name": "x"}), 400, "UNKNOWN_KEY")
    err(client.get("/admin/v1/projects/Nope0000/catalog", headers=h), 404, "PROJECT_NOT_FOUND")


def test_users_import_endpoint_is_all_or_nothing(client: TestClient, seeded: Seeded, tmp_path: Path) -> None:
    h = auth(seeded.admin_token)
    good = write_users_csv(
        tmp_path / "g.csv", [{ID: "C001", "usr_age": "60"}, {ID: "N1", "usr_age": "1"}], [ID, "usr_age"]
    ).read_bytes()
    r = client.post(A + "/users/import", headers=h, params={"filename": "g.csv"}, content=good)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["rowsRead"], body["inserted"], body["updated"]) == (2, 1, 1)
    assert body["segments"] == {SEGMENT: 6}  # C001 is now 60: out; N1 in (the DAILY seed segment)
    bad = b'id_$basic_userId,usr_age\n"X","1"\n"Y","old"\n'
    msg = err(
        client.post(A + "/users/import", headers=h, params={"format": "csv"}, content=bad), 400, "IMPORT_REJECTED"
    )
    assert msg == "row 2: key usr_age: value 'old' is not a valid int"
    err(client.post(A + "/users/import", headers=h, params={"filename": "x.bin"}, content=good), 400, "IMPORT_REJECTED")
    err(client.post(A + "/users/import", headers=h, params={"format": "xml"}, content=good), 400, "INVALID_PARAMETER")
    assert list((seeded.app.settings.data_dir / "uploads").iterdir()) == []  # temp files are removed


def test_uploads_skip_the_body_limit_but_have_their_own(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", serve_workers=False, max_body_bytes=2048, max_upload_bytes=300_000)
    app = build(settings)
    try:
        from tests.conftest import seed_project

        seeded = seed_project(app, tmp_path)
        rows = [{ID: f"U{i:05d}", "usr_city": "城市"} for i in range(5000)]
        data = write_users_csv(tmp_path / "big.csv", rows, [ID, "usr_city"]).read_bytes()
        assert 2048 < len(data) < 300_000
        with TestClient(create_app(app, run_workers=False)) as c:
            h = auth(seeded.admin_token)
            r = c.post(A + "/users/import", headers=h, params={"format": "csv"}, content=data)
            assert r.status_code == 200 and r.json()["inserted"] == 5000
            err(
                c.post(A + "/users/import", headers=h, params={"format": "csv"}, content=data * 5),
                413,
                "PAYLOAD_TOO_LARGE",
            )
            err(c.post(A + "/catalog/import", headers=h, content=data), 413, "PAYLOAD_TOO_LARGE")
    finally:
        app.close()


def test_segment_endpoints(client: TestClient, seeded: Seeded) -> None:
    h = auth(seeded.admin_token)
    rule = {"key": "usr_gender", "op": "eq", "value": "女"}
    r = client.post(
        A + "/segments", headers=h, json={"key": "seg_f", "name": "女性", "rule": rule, "scheduler": "ONCE"}
    )
    assert r.status_code == 201, r.text
    seg = r.json()
    assert (seg["createdBy"], seg["scheduler"], seg["detector"]["stage"], seg["detector"]["totalUsers"]) == (
        "DIRECT",
        "ONCE",
        "FINISH",
        2,
    )
    assert seg["rule"] == rule and seg["detector"]["detectedAt"].endswith("Z")
    r = client.post(
        A + "/segments/from_file", headers=h, params={"key": "seg_l", "name": "名单"}, content=b"C001\nC002\nNOPE\n"
    )
    assert (r.json()["detector"]["totalUsers"], r.json()["unmatchedIds"]) == (2, 1)
    assert [s["key"] for s in client.get(A + "/segments", headers=h).json()] == [SEGMENT, "seg_f", "seg_l"]
    assert client.get(A + "/segments/seg_l", headers=h).json()["identity"] == ID
    assert client.post(A + "/segments/seg_f/recompute", headers=h).json()["detector"]["totalUsers"] == 2
    assert client.delete(A + "/segments/seg_l", headers=h).status_code == 204
    err(client.get(A + "/segments/seg_l", headers=h), 404, "SEGMENT_NOT_FOUND")
    err(
        client.post(A + "/segments", headers=h, json={"key": "seg_f", "name": "x", "rule": rule}), 409, "ALREADY_EXISTS"
    )
    msg = err(
        client.post(
            A + "/segments",
            headers=h,
            json={"key": "seg_b", "name": "x", "rule": {"key": "usr_age", "op": "gt", "value": "old"}},
        ),
        400,
        "INVALID_RULE",
    )
    assert "'old' is not a valid int" in msg
    err(client.post(A + "/segments", headers=h, json={"key": "seg_b", "name": "x"}), 400, "INVALID_BODY")


def _cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segport.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SEGPORT_DATA_DIR": str(data_dir), **(env or {})},
    )


def test_cli_imports_through_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = build(Settings(data_dir=data, serve_workers=False))
    seeded = __import__("tests.conftest", fromlist=["seed_project"]).seed_project(app, tmp_path)
    app.close()
    server = start_server(data, tmp_path / "server.log", env={"SEGPORT_RECOMPUTE_INTERVAL_S": "1"})
    try:
        info = json.loads((data / "server.json").read_text())
        assert info["pid"] == server.process.pid and info["url"] == server.base_url
        f = write_users_csv(
            tmp_path / "n.csv", [{ID: "C006", "usr_age": "20"}, {ID: "NEW", "usr_age": "30"}], [ID, "usr_age"]
        )
        r = _cli(data, "users", "import", "--project", PROJECT, str(f))
        assert r.returncode == 0, r.stderr
        assert "2 rows read, 1 users inserted, 1 updated" in r.stdout and "running server" in r.stderr
        bad = tmp_path / "bad.csv"
        bad.write_text('id_$basic_userId,usr_age\n"Z","x"\n', encoding="utf-8")
        r = _cli(data, "users", "import", "--project", PROJECT, str(bad))
        assert (r.returncode, r.stderr.strip().splitlines()[-1]) == (
            2,
            "error: row 1: key usr_age: value 'x' is not a valid int",
        )
        r = _cli(
            data,
            "segment",
            "create",
            "--project",
            PROJECT,
            "--key",
            "seg_new",
            "--name",
            "新",
            "--rule",
            '{"key": "usr_age", "op": "eq", "value": 20}',
        )
        assert r.returncode == 0 and "1 users" in r.stdout, r.stderr
        assert _cli(data, "catalog", "rename", "--project", PROJECT, "usr_age", "岁").returncode == 0
        # an explicit admin token works too; a project token is refused
        r = _cli(
            data, "segment", "recompute", "--project", PROJECT, "seg_new", env={"SEGPORT_ADMIN_TOKEN": seeded.token}
        )
        assert r.returncode == 3 and "admin token" in r.stderr
        # the server serves what the CLI loaded: export the DAILY seed segment (C006 is now 20, NEW joined)
        h = auth(seeded.token)
        job = httpx.post(
            f"{server.base_url}/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs",
            headers=h,
            json={"properties": [ID, "usr_age"]},
        ).json()
        deadline = time.monotonic() + 30
        while (res := httpx.get(f"{server.base_url}/v1/api/job/result/{job['id']}", headers=h).json())[
            "stage"
        ] != "FINISH":
            assert time.monotonic() < deadline and res["stage"] != "ERROR", res
            time.sleep(0.1)
        rows = csv_rows(httpx.get(f"{server.base_url}/download?file={res['uris'][0]}", headers=h).content)
        assert ["6", "C006", "20"] in rows and ["8", "NEW", "30"] in rows
        tokens = _cli(data, "token", "list").stdout
        assert "cli one-off" not in tokens  # the one-off tokens are gone

        # the server's scheduler recomputes DAILY segments on its own (here every second)
        def detected() -> str:
            return str(
                json.loads(_cli(data, "segment", "show", "--project", PROJECT, SEGMENT).stdout)["detector"][
                    "detectedAt"
                ]
            )

        first = detected()
        deadline = time.monotonic() + 15
        while detected() == first:
            assert time.monotonic() < deadline, "DAILY segment was not recomputed by the server"
            time.sleep(0.3)
    finally:
        stop_server(server)
    assert not (data / "server.json").exists()
    r = _cli(data, "segment", "recompute", "--project", PROJECT, "seg_new")  # no server: works on the data dir
    assert r.returncode == 0 and "1 users" in r.stdout, r.stderr


def test_export_running_across_an_import_writes_the_pre_import_data(
    app: App, client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 60_000
    app.engine.chunk_rows = 10_000  # type: ignore[attr-defined]  # six COPYs in one read transaction
    app.engine.one_scan = False  # type: ignore[attr-defined]  # (not one scan of the users table)
    app.meta.create_project(PROJECT, "示例项目")
    app.data.import_catalog_csv(PROJECT, "key,name,type\nid_$basic_userId,ID,string\nusr_city,城市,string\n")
    import duckdb  # writes the input fast; the expected bytes below are built in Python

    duckdb.connect().execute(
        f"COPY (SELECT 'U' || i AS \"{ID}\", '城市' || (i % 1000) || '{PAD}' AS usr_city FROM range({n}) t(i)) "
        f"TO '{tmp_path / 'u.csv'}' (FORMAT CSV, HEADER)"
    )
    app.data.import_users(PROJECT, tmp_path / "u.csv")
    from segport.services.data import SegmentSpec

    app.data.create_segment(
        PROJECT, SegmentSpec(key="seg_all", name="全部", rule={"key": "usr_city", "op": "not_null"}, scheduler="ONCE")
    )
    _, token = app.meta.create_token([PROJECT])
    expected = "".join(
        ['"gio_id","id_$basic_userId","usr_city"\n', *(f'"{i + 1}","U{i}","城市{i % 1000}{PAD}"\n' for i in range(n))]
    ).encode()
    # the import touches the users the COPY writes last, and commits while the COPY is running
    change = write_users_csv(
        tmp_path / "c.csv", [{ID: f"U{n - 1}", "usr_city": "改了"}, {ID: "U0", "usr_city": "改"}], [ID, "usr_city"]
    )
    job = client.post(
        f"/v1/api/projects/{PROJECT}/segment_profiles/seg_all/export_jobs",
        headers=auth(token),
        json={"properties": [ID, "usr_city"]},
    ).json()
    # the export holds after its first chunk (its read transaction open) until the import has committed
    first_chunk_written, imported = threading.Event(), threading.Event()
    real_copy_to = duckdb_writer.copy_to

    def copy_then_hold(*args: object, **kwargs: object) -> int:
        rows = real_copy_to(*args, **kwargs)  # type: ignore[arg-type]
        if not first_chunk_written.is_set():
            first_chunk_written.set()
            assert imported.wait(60), "the import did not commit"
        return rows

    monkeypatch.setattr(duckdb_writer, "copy_to", copy_then_hold)
    worker = Worker(app, threads=1)
    runner = threading.Thread(target=worker.run_until_empty)
    runner.start()
    try:
        assert first_chunk_written.wait(60), "the export did not start"
        app.data.import_users(PROJECT, change)
        stage_after_import = app.queue.get(job["id"]).stage
    finally:
        imported.set()
    runner.join(60)
    res = client.get(f"/v1/api/job/result/{job['id']}", headers=auth(token)).json()
    assert res["stage"] == "FINISH", res
    data = client.get(f"/download?file={res['uris'][0]}", headers=auth(token)).content
    assert data == expected
    assert stage_after_import == "RUNNING"  # the import really landed mid-export
    # and a new export sees the import
    job2 = client.post(
        f"/v1/api/projects/{PROJECT}/segment_profiles/seg_all/export_jobs",
        headers=auth(token),
        json={"properties": [ID, "usr_city"]},
    ).json()
    worker.run_until_empty()
    res2 = client.get(f"/v1/api/job/result/{job2['id']}", headers=auth(token)).json()
    after = client.get(f"/download?file={res2['uris'][0]}", headers=auth(token)).content
    assert after.startswith(b'"gio_id","id_$basic_userId","usr_city"\n"1","U0","\xe6\x94\xb9"\n')
    assert after.endswith(f'"{n}","U{n - 1}","改了"\n'.encode())


@pytest.mark.parametrize("path", ["/admin/v1/projects/x/users/import", "/admin/v1/projects/x/segments/from_file"])
def test_upload_paths_are_recognised(path: str) -> None:
    from segport.http.admin import is_upload

    assert is_upload(path) and not is_upload("/v1/api/projects/x/users/import")
