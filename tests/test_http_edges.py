"""Requests real clients send that the seed does not show: a body with a byte-order mark, a compressed body,
and HEAD on a download."""

from __future__ import annotations

import codecs
import gzip
import json
import shutil
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Route

from segport.errors import FileNotFound
from segport.http.files import ResultFileResponse
from segport.worker import Worker
from tests.conftest import Seeded, auth
from tests.test_seed_api import EXPORT, run_export

BODY = b'{"properties": ["usr_gender", "tag_rfm"], "fileFormat": "json"}'


def test_export_body_starting_with_a_utf8_bom_is_read_as_the_same_json(client: TestClient, seeded: Seeded) -> None:
    # PowerShell 5's `Out-File -Encoding utf8` writes the BOM; `curl -d @body.json` then sends it
    plain = client.post(EXPORT, headers=auth(seeded.token), content=BODY)
    with_bom = client.post(EXPORT, headers=auth(seeded.token), content=codecs.BOM_UTF8 + BODY)
    assert with_bom.status_code == 200, with_bom.text
    assert with_bom.json() == plain.json()  # the identical request: the same job


def test_compressed_export_body_is_a_400_that_names_the_content_encoding(client: TestClient, seeded: Seeded) -> None:
    headers = {**auth(seeded.token), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    r = client.post(EXPORT, headers=headers, content=gzip.compress(BODY))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "INVALID_BODY"
    assert "Content-Encoding 'gzip' is not supported" in r.json()["error"]["message"]


def test_head_on_a_download_answers_the_headers_of_get_without_the_body(
    client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    _, result, content = run_export(client, worker, seeded.token, {"properties": ["usr_city"]})
    url = "/download?file=" + result["uris"][0]
    head = client.head(url, headers=auth(seeded.token))
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(content)
    get = client.get(url, headers=auth(seeded.token))
    for name in ("content-type", "content-disposition", "etag"):
        assert head.headers[name] == get.headers[name]
    assert client.head(url, headers=auth(seeded.other_token)).status_code == 404  # same rules as GET
    assert client.head(url).status_code == 401


def test_413_and_414_come_from_the_one_error_renderer(client: TestClient, seeded: Seeded) -> None:
    """The raw-ASGI guards answer with exactly the bytes every other error has (compact JSON, same shape)."""
    answers = [
        client.post(EXPORT, headers=auth(seeded.token), content=b" " * (1 << 21)),  # body over max_body_bytes
        client.get("/v1/api/job/result/" + "x" * 600, headers=auth(seeded.token)),  # a path segment over 512
        client.post(EXPORT, headers=auth(seeded.token), content=b"{"),  # an ordinary 400
    ]
    assert [r.status_code for r in answers] == [413, 414, 400]
    for r in answers:
        assert r.headers["content-type"] == "application/json"
        assert r.content == json.dumps(r.json(), separators=(",", ":"), ensure_ascii=False).encode()
        assert set(r.json()["error"]) == {"code", "message"}


@pytest.mark.parametrize("header", ["bytes=abc", "items=0-1", "bytes=5-1", "bytes"])
def test_download_ignores_a_range_header_it_cannot_use_and_sends_the_whole_file(
    client: TestClient, worker: Worker, seeded: Seeded, header: str
) -> None:
    _, result, content = run_export(client, worker, seeded.token, {"properties": ["usr_gender"]})
    r = client.get("/download?file=" + result["uris"][0], headers={**auth(seeded.token), "Range": header})
    assert r.status_code == 200  # RFC 9110 §14.2; Starlette answered a text/plain 400
    assert r.content == content


def test_download_range_past_the_end_is_a_json_416_with_content_range(
    client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    _, result, content = run_export(client, worker, seeded.token, {"properties": ["usr_gender"]})
    url = "/download?file=" + result["uris"][0]
    r = client.get(url, headers={**auth(seeded.token), "Range": f"bytes={len(content)}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(content)}"
    assert r.json()["error"]["code"] == "RANGE_NOT_SATISFIABLE"
    part = client.get(url, headers={**auth(seeded.token), "Range": "bytes=2-5"})  # a good range still works
    assert (part.status_code, part.content) == (206, content[2:6])


def test_a_result_deleted_after_its_download_was_resolved_is_still_sent_whole(
    client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    # the janitor may expire the job between the handler's checks and the file being streamed
    _, result, content = run_export(client, worker, seeded.token, {"properties": ["usr_city", "tag_rfm"]})
    who = seeded.app.meta.authenticate(seeded.token)
    found = seeded.app.exports.download(who, unquote(result["uris"][0]))
    response = ResultFileResponse(found.path, media_type=found.media_type, filename=found.file_name)
    shutil.rmtree(found.path.parent)  # what the janitor does to an expired job
    assert not found.path.exists()
    served = TestClient(Starlette(routes=[Route("/f", lambda _request: response)])).get("/f")
    assert served.status_code == 200
    assert served.content == content


def test_a_result_deleted_before_its_download_opens_is_a_json_404_not_a_500(
    client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    _, result, _ = run_export(client, worker, seeded.token, {"properties": ["usr_age"]})
    who = seeded.app.meta.authenticate(seeded.token)
    found = seeded.app.exports.download(who, unquote(result["uris"][0]))
    shutil.rmtree(found.path.parent)
    with pytest.raises(FileNotFound, match="no longer there"):
        ResultFileResponse(found.path, media_type=found.media_type, filename=found.file_name)
