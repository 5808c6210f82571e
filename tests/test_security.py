"""Security: hashed, revocable tokens; projects see only their own segments, jobs and files; /download refuses
every path trick; Content-Disposition is safe for any segment name; the opt-in excel_safe setting."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from segport.app import App
from segport.cli import cli
from segport.domain.text import bad_character
from segport.errors import InvalidParameter
from segport.roles.inline import build, create_app
from segport.services.data import SegmentSpec
from segport.settings import Settings
from segport.worker import Worker
from tests.conftest import OTHER_PROJECT, PROJECT, SEGMENT, USERS, Seeded, auth, seed_project
from tests.expected import expected_csv

EXPORT = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
OTHER_EXPORT = f"/v1/api/projects/{OTHER_PROJECT}/segment_profiles/{SEGMENT}/export_jobs"


def finished(client: TestClient, worker: Worker, token: str, url: str = EXPORT, body: dict | None = None) -> dict:
    job = client.post(url, headers=auth(token), json=body or {"properties": ["usr_gender"]})
    assert job.status_code == 200, job.text
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{job.json()['id']}", headers=auth(token)).json()
    assert result["stage"] == "FINISH", result
    return result


# --- tokens ----------------------------------------------------------------------------------------
def test_tokens_are_stored_only_as_hashes(app: App, seeded: Seeded) -> None:
    stored = b"".join(p.read_bytes() for p in app.settings.data_dir.glob("meta.sqlite*"))
    for raw in (seeded.token, seeded.other_token, seeded.admin_token):
        assert raw.encode() not in stored
        assert hashlib.sha256(raw.encode()).hexdigest().encode() in stored


@pytest.mark.parametrize("by", ["value", "id"])
def test_revoked_token_fails_at_once(app: App, client: TestClient, seeded: Seeded, by: str) -> None:
    assert client.get("/v1/api/job/result/nosuchid", headers=auth(seeded.token)).status_code == 404
    token_id = app.meta.authenticate(seeded.token).token_id
    runner = CliRunner()
    out = runner.invoke(
        cli,
        ["--data-dir", str(app.settings.data_dir), "token", "revoke", seeded.token if by == "value" else str(token_id)],
    )
    assert out.exit_code == 0, out.output
    r = client.get("/v1/api/job/result/nosuchid", headers=auth(seeded.token))  # the running app, no restart
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHORIZED"
    assert client.post(EXPORT, headers=auth(seeded.token), json={}).status_code == 401
    assert client.post(OTHER_EXPORT, headers=auth(seeded.other_token), json={}).status_code == 200


@pytest.mark.parametrize("header", ["Bearer ", "Bearer nope", "Basic dXNlcjpwYXNz", "", "Bearer " + "x" * 5000])
def test_bad_tokens_are_401(client: TestClient, seeded: Seeded, header: str) -> None:
    r = client.post(EXPORT, headers={"Authorization": header} if header else {}, json={})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"code", "message"}


# --- projects --------------------------------------------------------------------------------------
def test_another_projects_segment_job_and_file_are_404(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    theirs = finished(client, worker, seeded.other_token, OTHER_EXPORT)
    r = client.post(OTHER_EXPORT, headers=auth(seeded.token), json={})
    assert r.status_code == 404
    assert client.get(f"/v1/api/job/result/{theirs['id']}", headers=auth(seeded.token)).status_code == 404
    d = client.get("/download?file=" + theirs["uris"][0], headers=auth(seeded.token))
    assert d.status_code == 404
    assert d.json()["error"]["code"] == "FILE_NOT_FOUND"
    # the same answers as for things that do not exist at all: nothing leaks
    assert (
        client.get("/v1/api/job/result/zzzzzzzz", headers=auth(seeded.token)).json()["error"]["code"]
        == client.get(f"/v1/api/job/result/{theirs['id']}", headers=auth(seeded.token)).json()["error"]["code"]
    )
    assert client.get("/download?file=" + theirs["uris"][0], headers=auth(seeded.other_token)).status_code == 200


def test_download_refuses_every_path_trick(app: App, client: TestClient, worker: Worker, seeded: Seeded) -> None:
    mine = finished(client, worker, seeded.token)
    theirs = finished(client, worker, seeded.other_token, OTHER_EXPORT)
    path = unquote(mine["uris"][0])
    job_dir = f"/jobs/results/{mine['name']}"
    file_name = path.rsplit("/", 1)[1]
    real = app.settings.data_dir / "results" / mine["name"] / file_name
    assert real.is_file()
    tricks = [
        f"{job_dir}/../../meta.sqlite",
        quote(f"{job_dir}/../../meta.sqlite", safe=""),
        quote(quote(f"{job_dir}/../../meta.sqlite", safe=""), safe=""),  # double-encoded
        f"{job_dir}/%2e%2e%2f%2e%2e%2fmeta.sqlite",
        f"{job_dir}/..%2F..%2Fmeta.sqlite",
        f"{job_dir}/..",
        f"{job_dir}/.",
        "/jobs/results/../meta.sqlite",
        "/jobs/results/..%2Fmeta.sqlite",
        str(real),  # the absolute path of a real result file
        str(app.settings.data_dir / "meta.sqlite"),
        "/etc/passwd",
        f"{job_dir}//etc/passwd",
        f"{job_dir}/{file_name}\x00.txt",
        f"{job_dir}/{file_name}%00",
        f"{job_dir}\\{file_name}",
        f"{job_dir}/..\\..\\meta.sqlite",
        "\\jobs\\results\\" + mine["name"] + "\\" + file_name,
        f"{job_dir}/{file_name}/",
        f"{job_dir}/other_UserList.csv",
        f"/jobs/results/{mine['name']}.x/{file_name}",
        f"/jobs/results/{theirs['name']}/{file_name}",
        unquote(theirs["uris"][0]),
        f"file://{real}",
        f"http://evil.example{path}",
        "",
        "%",
        "/jobs/results/",
    ]
    for trick in tricks:
        r = client.get("/download", params={"file": trick}, headers=auth(seeded.token))
        assert r.status_code in (400, 404), (trick, r.status_code, r.text[:200])
        assert set(r.json()["error"]) == {"code", "message"}, trick
    # raw query strings the client would otherwise normalise
    for raw in [
        f"/download?file={job_dir}/%2e%2e/%2e%2e/meta.sqlite",
        "/download?file=%00",
        "/download?file=%2F..%2F..",
        f"/download?file={quote(job_dir, safe='')}%2F%2E%2E%2F%2E%2E%2Fmeta.sqlite",
    ]:
        r = client.get(raw, headers=auth(seeded.token))
        assert r.status_code in (400, 404), raw
    assert client.get("/download?file=" + mine["uris"][0], headers=auth(seeded.token)).status_code == 200


NASTY_NAMES = [
    'say "hi"\r\nSet-Cookie: stolen=1',
    "../../etc/passwd",
    '报表;名单 "Q3", final',
    "emoji 🎉 and tab\tend",
    "back\\slash <x> | y? *",
    " .. ",
    "plain-ascii name",
    "超长的群体画像名称" * 22,  # 198 characters, 594 bytes of UTF-8: more than a file name may hold
]


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_content_disposition_is_safe_for_any_segment_name(
    app: App, client: TestClient, worker: Worker, seeded: Seeded, name: str
) -> None:
    rule = {"key": "usr_age", "op": "gt", "value": 0}
    if bad_character(name):  # refused since docs/limits.md; a name stored before must still be served safely
        with pytest.raises(InvalidParameter, match="control character"):
            app.data.create_segment(PROJECT, SegmentSpec(key="seg_nasty", name=name, rule=rule))
        app.data.create_segment(PROJECT, SegmentSpec(key="seg_nasty", name="placeholder", rule=rule))
        app.meta.update_segment(PROJECT, "seg_nasty", name=name)
    else:
        app.data.create_segment(PROJECT, SegmentSpec(key="seg_nasty", name=name, rule=rule))
    url = f"/v1/api/projects/{PROJECT}/segment_profiles/seg_nasty/export_jobs"
    result = finished(client, worker, seeded.token, url)
    r = client.get("/download?file=" + result["uris"][0], headers=auth(seeded.token))
    assert r.status_code == 200
    raw = r.headers.raw
    (value,) = [v for k, v in raw if k.lower() == b"content-disposition"]
    assert b"\r" not in value and b"\n" not in value
    assert not any(k.lower() == b"set-cookie" for k, _ in raw)
    text = value.decode("latin-1")
    m = re.fullmatch(
        r"attachment; (?:filename\*=utf-8''([A-Za-z0-9%._~!$&'()*+,;=:@-]+)|filename=\"([^\"\\]*)\")", text
    )
    assert m, text
    shown = unquote(m.group(1)) if m.group(1) else m.group(2)
    assert shown == unquote(result["uris"][0]).rsplit("/", 1)[1]
    assert not set(shown) & set('/\\"\r\n\t\x00')
    assert shown.endswith("_UserList.csv")


# --- excel_safe ------------------------------------------------------------------------------------
def _excel(value: str | None) -> str | None:
    return "'" + value if value is not None and value[:1] in ("=", "+", "-", "@") else value


def test_excel_safe_is_off_by_default_so_the_seeds_bytes_win(
    client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    keys = ["usr_city", "usr_score"]
    result = finished(client, worker, seeded.token, body={"properties": keys})
    content = client.get("/download?file=" + result["uris"][0], headers=auth(seeded.token)).content
    assert content == expected_csv(keys)
    assert b'"=SUM(A1:A2)"' in content


def test_excel_safe_prefixes_formula_cells(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", serve_workers=False, excel_safe=True)
    app = build(settings)
    try:
        seeded = seed_project(app, tmp_path)
        app.data.create_segment(
            PROJECT, SegmentSpec(key="seg_all", name="all", rule={"key": "id_$basic_userId", "op": "not_null"})
        )
        with TestClient(create_app(app, run_workers=False)) as client:
            keys = ["usr_city", "usr_gender", "usr_score", "usr_age"]
            url = f"/v1/api/projects/{PROJECT}/segment_profiles/seg_all/export_jobs"
            result = finished(client, Worker(app, threads=1), seeded.token, url, body={"properties": keys})
            content = client.get("/download?file=" + result["uris"][0], headers=auth(seeded.token)).content
    finally:
        app.close()
    # strings that start with = + - @ get a leading quote; numbers (usr_score -3.25) never do
    rows = [
        (g, {**u, "usr_city": _excel(u.get("usr_city")), "usr_gender": _excel(u.get("usr_gender"))})
        for g, u in enumerate(USERS, start=1)
    ]
    assert content == expected_csv(keys, rows=rows)
    assert b'"\'=SUM(A1:A2)"' in content
    assert b'"\'-1+2"' in content
    assert b'"-3.25"' in content
