"""Result files in S3, against a real S3 server (the JuiceFS gateway, see tests/s3_support.py): the same bytes
as the local store for every format and option, downloads with HEAD/Range/If-Range or a presigned redirect,
expiry, and a server that really checks signatures."""

from __future__ import annotations

import gzip
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.errors import ResultStoreUnavailable
from segport.roles.inline import build, create_app
from segport.services.data import SegmentSpec
from segport.settings import Settings
from segport.store.models import utcnow
from segport.worker import Worker
from tests.conftest import PROJECT, SEGMENT, auth
from tests.s3_support import S3Gateway
from tests.test_crash import PROPS, make_data_dir

BIG_USERS = 250_000  # more than one DuckDB chunk (200k) and several 5 MiB parts: the streaming paths


def export_path(segment: str) -> str:
    return f"/v1/api/projects/{PROJECT}/segment_profiles/{segment}/export_jobs"


class Side:
    """One App over its own copy of a data dir, with a client and an inline worker."""

    def __init__(self, settings: Settings) -> None:
        self.app: App = build(settings)
        self.client = TestClient(create_app(self.app, run_workers=False), raise_server_exceptions=False)
        self.worker = Worker(self.app, threads=1)

    def export(self, token: str, segment: str, body: dict) -> tuple[dict, list[bytes]]:
        created = self.client.post(export_path(segment), headers=auth(token), json=body)
        assert created.status_code == 200, created.text
        self.worker.run_until_empty()
        result = self.client.get(f"/v1/api/job/result/{created.json()['id']}", headers=auth(token)).json()
        assert result["stage"] == "FINISH", result
        files = []
        for uri in result["uris"]:
            r = self.client.get("/download?file=" + uri, headers=auth(token))
            assert r.status_code == 200, r.text
            files.append(r.content)
        return result, files

    def close(self) -> None:
        self.client.close()
        self.app.close()


def s3_settings(data_dir: Path, env: dict[str, str], **extra: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        serve_workers=False,
        results="s3",
        s3_bucket=env["SEGPORT_S3_BUCKET"],
        s3_endpoint_url=env["SEGPORT_S3_ENDPOINT_URL"],
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def big_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data, token, _ = make_data_dir(tmp_path_factory.mktemp("s3-big"), BIG_USERS)
    return data, token


def pair(template: Path, tmp_path: Path, env: dict[str, str], **extra: object) -> Iterator[tuple[Side, Side]]:
    shutil.copytree(template, tmp_path / "local")
    shutil.copytree(template, tmp_path / "s3")
    local = Side(Settings(data_dir=tmp_path / "local", serve_workers=False, **extra))  # type: ignore[arg-type]
    remote = Side(s3_settings(tmp_path / "s3", env, **extra))
    try:
        yield local, remote
    finally:
        local.close()
        remote.close()


@pytest.mark.parametrize(
    ("body", "max_file_rows"),
    [
        ({"properties": PROPS}, 0),
        ({"properties": PROPS, "fileFormat": "json", "compression": "gzip"}, 120_000),
        ({"properties": PROPS, "bom": True, "compression": "gzip", "csvHeaderType": "name"}, 100_000),
    ],
)
def test_large_exports_in_s3_are_byte_identical_to_the_local_store(
    big_data: tuple[Path, str], tmp_path: Path, s3_env: dict[str, str], body: dict, max_file_rows: int
) -> None:
    data, token = big_data
    for local, remote in pair(data, tmp_path, s3_env, max_file_rows=max_file_rows):
        local_result, local_files = local.export(token, "seg_all", body)
        remote_result, remote_files = remote.export(token, "seg_all", body)
        assert len(remote_files) == len(local_files) == (-(-BIG_USERS // max_file_rows) if max_file_rows else 1)
        for mine, theirs in zip(remote_files, local_files, strict=True):
            assert len(mine) == len(theirs)
            assert mine == theirs
        assert remote_result["rows"] == BIG_USERS
        assert remote_result["bytes"] == local_result["bytes"] == sum(map(len, local_files))
        assert [u.rsplit("%2F", 1)[1] for u in remote_result["uris"]] == [
            u.rsplit("%2F", 1)[1] for u in local_result["uris"]
        ]
        if body.get("compression") == "gzip":
            text = gzip.decompress(remote_files[0])
            assert text.startswith(b"\xef\xbb\xbf" if body.get("bom") else b"{")
        # every upload was completed: nothing is left half-done in the bucket
        s3 = remote.app.results.client  # type: ignore[attr-defined]
        bucket = s3_env["SEGPORT_S3_BUCKET"]
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        # and the files are the bucket's objects, under the documented key layout (docs/results-s3.md):
        # <prefix>results/<job name>/<job id>-<attempt>/<file>, the default prefix being segport/
        folder = f"segport/results/{remote_result['name']}/{remote_result['id']}-1/"
        objects = s3.list_objects_v2(Bucket=bucket, Prefix=folder).get("Contents", [])
        assert sorted(o["Key"][len(folder) :] for o in objects) == sorted(
            unquote(u).rsplit("/", 1)[1] for u in remote_result["uris"]
        )
        assert sorted(o["Size"] for o in objects) == sorted(map(len, remote_files))
        # and the local staging folder held FIFOs only, removed with the attempt
        assert not any((tmp_path / "s3" / "results" / ".staging").iterdir())


SMALL_BODIES = [
    {"properties": ["id_$basic_userId", "usr_gender", "tag_rfm"]},
    {"properties": ["usr_city", "usr_score", "id_$anonymous_user"], "csvHeaderType": "name"},
    {"properties": ["usr_city", "tag_rfm"], "fileFormat": "json"},
    {"properties": []},
    {"properties": ["usr_city"], "bom": True},
    {"properties": ["usr_city"], "compression": "gzip"},
    {"properties": ["usr_city", "usr_gender"], "bom": True, "compression": "gzip", "csvHeaderType": "name"},
    {"properties": ["usr_city"], "fileFormat": "json", "compression": "gzip"},
]


@pytest.fixture
def small_pair(
    seeded_template: tuple[Path, tuple[str, str, str]], tmp_path: Path, s3_env: dict[str, str]
) -> Iterator[tuple[Side, Side, str]]:
    template, (token, _, _) = seeded_template
    for local, remote in pair(template, tmp_path, s3_env, max_file_rows=0):
        yield local, remote, token


def test_every_format_and_option_in_s3_matches_the_local_store(small_pair: tuple[Side, Side, str]) -> None:
    local, remote, token = small_pair
    for body in SMALL_BODIES:
        _, local_files = local.export(token, SEGMENT, body)
        _, remote_files = remote.export(token, SEGMENT, body)
        assert remote_files == local_files, body


def test_an_export_of_no_members_is_an_empty_object_like_the_local_empty_file(
    small_pair: tuple[Side, Side, str],
) -> None:
    local, remote, token = small_pair
    for side in (local, remote):
        side.app.data.create_segment(
            PROJECT,
            SegmentSpec(key="seg_none", name="无人", rule={"key": "usr_age", "op": "gt", "value": 1000}),
        )
    body = {"properties": ["usr_city"], "fileFormat": "json"}
    _, local_files = local.export(token, "seg_none", body)
    _, remote_files = remote.export(token, "seg_none", body)
    assert remote_files == local_files == [b""]


def test_s3_downloads_answer_head_range_and_if_range_as_local_files(small_pair: tuple[Side, Side, str]) -> None:
    local, remote, token = small_pair
    body = {"properties": ["usr_city", "usr_gender", "tag_rfm"]}
    results = {}
    for side in (local, remote):
        result, (content,) = side.export(token, SEGMENT, body)
        results[side] = ("/download?file=" + result["uris"][0], content)
    url, content = results[remote]
    c, h = remote.client, auth(token)
    head = c.head(url, headers=h)
    get = c.get(url, headers=h)
    assert head.status_code == get.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(content) == len(results[local][1])
    for name in ("content-type", "content-disposition", "etag", "last-modified", "accept-ranges"):
        assert head.headers[name] == get.headers[name]
    local_get = local.client.get(results[local][0], headers=h)
    for name in ("content-type", "content-disposition", "accept-ranges"):
        assert get.headers[name] == local_get.headers[name]
    # ranges, as tests/test_http_edges.py expects of local files
    part = c.get(url, headers={**h, "Range": "bytes=2-5"})
    assert (part.status_code, part.content, part.headers["content-range"]) == (
        206,
        content[2:6],
        f"bytes 2-5/{len(content)}",
    )
    tail = c.get(url, headers={**h, "Range": "bytes=-7"})
    assert (tail.status_code, tail.content) == (206, content[-7:])
    for bad in ("bytes=abc", "items=0-1", "bytes=5-1", "bytes"):
        whole = c.get(url, headers={**h, "Range": bad})
        assert (whole.status_code, whole.content) == (200, content)
    past = c.get(url, headers={**h, "Range": f"bytes={len(content)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(content)}"
    assert past.json()["error"]["code"] == "RANGE_NOT_SATISFIABLE"
    several = c.get(url, headers={**h, "Range": "bytes=0-1, 10-12"})
    assert several.status_code == 206 and several.headers["content-type"].startswith("multipart/byteranges")
    assert content[10:13] in several.content
    # If-Range: a resume with the current validator gets the range, a stale one the whole file
    resumed = c.get(url, headers={**h, "Range": "bytes=50-", "If-Range": get.headers["etag"]})
    assert (resumed.status_code, resumed.content) == (206, content[50:])
    stale = c.get(url, headers={**h, "Range": "bytes=50-", "If-Range": '"not-the-etag"'})
    assert (stale.status_code, stale.content) == (200, content)
    # the same validators from another App over the same bucket (any API process answers alike)
    again = Side(remote.app.settings)
    try:
        assert again.client.head(url, headers=h).headers["etag"] == get.headers["etag"]
    finally:
        again.close()
    # the seed's auth rules hold
    assert c.get(url).status_code == 401


def test_presigned_redirect_keeps_the_file_name_and_the_gateway_serves_it(
    seeded_template: tuple[Path, tuple[str, str, str]], tmp_path: Path, s3_env: dict[str, str]
) -> None:
    template, (token, other, _) = seeded_template
    shutil.copytree(template, tmp_path / "data")
    side = Side(s3_settings(tmp_path / "data", s3_env, s3_presigned_redirect=True, s3_presigned_ttl_s=60))
    try:
        created = side.client.post(export_path(SEGMENT), headers=auth(token), json={"properties": ["usr_city"]})
        side.worker.run_until_empty()
        result = side.client.get(f"/v1/api/job/result/{created.json()['id']}", headers=auth(token)).json()
        url = "/download?file=" + result["uris"][0]
        answer = side.client.get(url, headers=auth(token), follow_redirects=False)
        assert answer.status_code == 302
        location = answer.headers["location"]
        assert location.startswith(s3_env["SEGPORT_S3_ENDPOINT_URL"]) and "X-Amz-Signature=" in location
        assert "X-Amz-Expires=60&" in location + "&"  # valid for s3_presigned_ttl_s
        assert side.client.get(url, headers=auth(other), follow_redirects=False).status_code == 404
        assert side.client.get(url, follow_redirects=False).status_code == 401
        fetched = httpx.get(location, timeout=30)  # a real GET to the gateway, no credentials but the URL's
        assert fetched.status_code == 200
        file_name = unquote(result["uris"][0]).rsplit("/", 1)[1]
        assert unquote(fetched.headers["content-disposition"].split("''", 1)[1]) == file_name
        assert fetched.headers["content-type"].startswith("text/csv")
        assert fetched.content.startswith(b'"gio_id","usr_city"\n')
        forged = location.replace("X-Amz-Signature=", "X-Amz-Signature=0")
        assert httpx.get(forged, timeout=30).status_code == 403
    finally:
        side.close()


def test_expired_results_are_deleted_from_the_bucket_and_answer_410(
    small_pair: tuple[Side, Side, str], s3_env: dict[str, str]
) -> None:
    _, remote, token = small_pair
    result, _ = remote.export(token, SEGMENT, {"properties": ["usr_city"]})
    bucket, s3 = s3_env["SEGPORT_S3_BUCKET"], remote.app.results.client  # type: ignore[attr-defined]
    assert len(s3.list_objects_v2(Bucket=bucket).get("Contents", [])) == 1
    assert remote.app.exports.expire(now=utcnow() + timedelta(days=30)) == 1
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    answer = remote.client.get("/download?file=" + result["uris"][0], headers=auth(token))
    assert answer.status_code == 410 and answer.json()["error"]["code"] == "JOB_EXPIRED"


def test_the_janitor_removes_objects_and_uploads_no_attempt_owns(
    small_pair: tuple[Side, Side, str], s3_env: dict[str, str]
) -> None:
    _, remote, token = small_pair
    result, (content,) = remote.export(token, SEGMENT, {"properties": ["usr_city"]})
    bucket, s3 = s3_env["SEGPORT_S3_BUCKET"], remote.app.results.client  # type: ignore[attr-defined]
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    job_id = result["id"]
    stray = key.replace(f"/{job_id}-1/", f"/{job_id}-7/")  # an attempt that completed but never got FINISH
    s3.put_object(Bucket=bucket, Key=stray, Body=b"partial")
    stale = s3.create_multipart_upload(Bucket=bucket, Key=key.replace(f"/{job_id}-1/", f"/{job_id}-8/"))
    done = remote.app.exports.cleanup()
    assert done["orphans"] == 1 and done["staging"] == 1
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert stale["UploadId"] not in {u["UploadId"] for u in uploads} and uploads == []
    again = remote.client.get("/download?file=" + result["uris"][0], headers=auth(token))
    assert again.content == content


def test_the_gateway_refuses_a_wrong_secret_key(s3_gateway: S3Gateway) -> None:
    """What makes these tests worth having: the server checks SigV4 signatures."""
    from botocore.exceptions import ClientError

    bucket = s3_gateway.new_bucket()
    with pytest.raises(ClientError) as refused:
        s3_gateway.client(secret_key="not-the-secret-key-at-all").put_object(Bucket=bucket, Key="k", Body=b"x")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert s3_gateway.client().list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_check_names_a_missing_bucket_and_refused_credentials(
    tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = build(s3_settings(tmp_path / "a", {**s3_env, "SEGPORT_S3_BUCKET": "no-such-bucket-here"}))
    try:
        with pytest.raises(ResultStoreUnavailable, match="S3 bucket 'no-such-bucket-here' does not exist at http"):
            missing.results.check()
    finally:
        missing.close()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-key-0000")
    refused = build(s3_settings(tmp_path / "b", s3_env))
    try:
        with pytest.raises(ResultStoreUnavailable, match="S3 refused access to bucket"):
            refused.results.check()
    finally:
        refused.close()


def test_a_cancelled_export_aborts_its_uploads(
    big_data: tuple[Path, str], tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, token = big_data
    shutil.copytree(data, tmp_path / "data")
    side = Side(s3_settings(tmp_path / "data", s3_env, s3_upload_buffers=1, duckdb_threads=1))
    bucket, s3 = s3_env["SEGPORT_S3_BUCKET"], side.app.results.client  # type: ignore[attr-defined]
    # the upload's reader (segport/results/s3_upload.py) is held after its first read until the cancel is in: the
    # export is mid-upload when cancelled (the COPY blocked on its FIFO), however fast the machine
    read, release = threading.Event(), threading.Event()
    real_readv = os.readv

    def readv_then_hold(fd: int, buffers: list) -> int:
        n = real_readv(fd, buffers)
        if threading.current_thread().name.startswith("segport-s3-read"):
            read.set()
            release.wait(60)
        return n

    monkeypatch.setattr(os, "readv", readv_then_hold)
    runner = None
    try:
        created = side.client.post(export_path("seg_all"), headers=auth(token), json={"properties": PROPS})
        job_id = created.json()["id"]
        runner = threading.Thread(target=side.worker.run_until_empty)
        runner.start()
        assert read.wait(60), "the upload never started"
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # open, not completed
        try:
            side.app.exports.cancel(side.app.meta.authenticate(token), job_id)
        finally:
            release.set()
        runner.join(60)
        assert not runner.is_alive()
        result = side.client.get(f"/v1/api/job/result/{job_id}", headers=auth(token)).json()
        assert result["stage"] == "ERROR" and result["error"]["code"] == "JOB_CANCELLED"
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
        assert not any((tmp_path / "data" / "results" / ".staging").iterdir())
    finally:
        release.set()
        if runner is not None:
            runner.join(60)
        side.close()
