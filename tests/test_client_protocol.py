"""What the client sends and how it paces itself, against stub servers (the outside world): Retry-After on 429,
exponential backoff with jitter, the tag export request, and a GrowingIO-compatible server that sends only
what the seed documents (no segport extras, no Range support)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from segport.client import Backoff, Client, ConnectionFailed, TooManyJobs, TooManyRequests
from segport.client.download import file_name_of, target_paths
from tests.client_support import BASE, FAST

SEED_URI = "%2Fjobs%2Fresults%2FDES-202205240136-5818534160000%2Fzxm_%E7%94%A8%E6%88%B7_2022-04-26_UserList.csv"
CSV = '"gio_id","id_$basic_userId","usr_gender"\n"603542","C001","男"\n"605419","C004",\n'.encode()


class Stub:
    """A scripted server: each path answers from its queue of responses (the last one repeats)."""

    def __init__(self, script: dict[str, list[httpx.Response]]) -> None:
        self.script = script
        self.seen: list[tuple[float, httpx.Request]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((time.monotonic(), request))
        queue = self.script[request.url.path]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def times(self, path: str) -> list[float]:
        return [t for t, r in self.seen if r.url.path == path]


def _429(retry_after: str | None, code: str = "TOO_MANY_REQUESTS") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(429, headers=headers, json={"error": {"code": code, "message": "slow down"}})


def test_wait_honours_retry_after_on_429() -> None:
    stub = Stub(
        {
            "/v1/api/job/result/kqQeWeGr": [
                _429("1"),
                httpx.Response(200, json={"stage": "RUNNING", "uris": []}),
                httpx.Response(200, json={"stage": "FINISH", "uris": [SEED_URI]}),
            ]
        }
    )
    with Client(BASE, "t", transport=httpx.MockTransport(stub), backoff=FAST) as client:
        result = client.wait("kqQeWeGr", timeout=10)
    assert result.uris == (SEED_URI,)
    t = stub.times("/v1/api/job/result/kqQeWeGr")
    assert len(t) == 3
    assert t[1] - t[0] >= 1.0  # the server's Retry-After, though the backoff alone would wait ~0.02 s
    assert t[2] - t[1] < 0.9  # afterwards the (fast) backoff applies again, not the 1 s Retry-After


def test_retry_after_as_an_http_date_is_honoured() -> None:
    when = time.time() + 1.5
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(when))
    stub = Stub({"/v1/api/job/result/abc": [_429(date), httpx.Response(200, json={"stage": "FINISH", "uris": ["u"]})]})
    with Client(BASE, "t", transport=httpx.MockTransport(stub), backoff=FAST) as client:
        client.wait("abc", timeout=10)
    t = stub.times("/v1/api/job/result/abc")
    assert t[1] - t[0] >= 0.4  # HTTP dates have whole seconds: at least what is left of them


def test_submit_is_retried_after_429_with_retry_after() -> None:
    path = "/v1/api/projects/WlGk4Daj/segment_profiles/seg_x/export_jobs"
    stub = Stub({path: [_429("1", "TOO_MANY_JOBS"), httpx.Response(200, json={"id": "kqQeWeGr", "name": "DES-1"})]})
    with Client(BASE, "t", transport=httpx.MockTransport(stub), backoff=FAST) as client:
        job = client.submit_segment_export("WlGk4Daj", "seg_x")
    assert job.id == "kqQeWeGr"
    t = stub.times(path)
    assert len(t) == 2 and t[1] - t[0] >= 1.0


def test_retry_after_beyond_the_cap_is_raised_at_once() -> None:
    path = "/v1/api/projects/P/segment_profiles/seg_x/export_jobs"
    stub = Stub({path: [_429("3600", "TOO_MANY_JOBS")]})
    with (
        Client(BASE, "t", transport=httpx.MockTransport(stub), backoff=FAST, max_retry_after_s=60) as client,
        pytest.raises(TooManyJobs) as exc,
    ):
        client.submit_segment_export("P", "seg_x")
    assert exc.value.retry_after == 3600 and len(stub.seen) == 1


def test_429_without_retry_after_backs_off_then_gives_up() -> None:
    stub = Stub({"/v1/api/job/result/abc": [_429(None)]})
    with (
        Client(BASE, "t", transport=httpx.MockTransport(stub), backoff=FAST, retries=3) as client,
        pytest.raises(TooManyRequests),
    ):
        client.job_result("abc")
    t = stub.times("/v1/api/job/result/abc")
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    assert len(t) == 4  # one try and three retries
    assert gaps[2] > gaps[0]  # growing waits


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    b = Backoff(initial_s=1.0, factor=2.0, max_s=10.0, jitter=0.5)
    for attempt, base in enumerate([1, 2, 4, 8, 10, 10]):
        samples = [b.delay(attempt) for _ in range(200)]
        assert all(base * 0.5 <= s <= base for s in samples)
        assert max(samples) - min(samples) > base * 0.3  # jittered, not one fixed value
    assert b.delay(0, retry_after=7.0) == 7.0  # Retry-After is a floor
    assert b.delay(5, retry_after=0.0) >= 5.0


@pytest.mark.parametrize(
    ("error", "call", "retries", "sent"),
    [
        # nothing reached the server: any request is retried, then fails
        (httpx.ConnectError("connection refused"), lambda c: c.job_result("abc"), 2, 3),
        # a read error after sending could mean a job was created: a POST is not submitted twice
        (httpx.ReadError("connection reset"), lambda c: c.submit_segment_export("P", "seg_x"), 3, 1),
    ],
    ids=[
        "connection_refused_is_retried_then_connection_failed",
        "a_post_is_not_resent_after_the_server_may_have_got_it",
    ],
)
def test_transport_errors_are_retried_unless_a_post_may_have_arrived(
    error: httpx.TransportError, call: Callable[[Client], object], retries: int, sent: int
) -> None:
    calls: list[httpx.Request] = []

    def fail(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        error.request = request
        raise error

    with (
        Client(BASE, "t", transport=httpx.MockTransport(fail), backoff=FAST, retries=retries) as client,
        pytest.raises(ConnectionFailed, match=str(error)),
    ):
        call(client)
    assert len(calls) == sent


def test_tag_export_request_and_flow(tmp_path: Path) -> None:
    """The tag path is not on this branch's server yet: check the request the client builds, and the flow."""
    path = "/v1/api/projects/WlGk4Daj/user_tags/tag_rfm/export_jobs"
    stub = Stub(
        {
            path: [httpx.Response(200, json={"id": "tagJob01", "name": "DET-202611281200-1"})],
            "/v1/api/job/result/tagJob01": [httpx.Response(200, json={"stage": "FINISH", "uris": [SEED_URI]})],
            "/download": [httpx.Response(200, content=CSV)],
        }
    )
    with Client(BASE, "tok", transport=httpx.MockTransport(stub), backoff=FAST) as client:
        paths = client.export_tag(
            "WlGk4Daj", "tag_rfm", ["id_$basic_userId", "usr_gender"], header="name", dest=tmp_path
        )
    submit = stub.seen[0][1]
    assert submit.method == "POST" and submit.url.path == path
    assert submit.headers["authorization"] == "Bearer tok"
    assert submit.headers["content-type"] == "application/json"
    assert json.loads(submit.content) == {
        "properties": ["id_$basic_userId", "usr_gender"],
        "fileFormat": "csv",
        "csvHeaderType": "name",
    }
    assert paths == [tmp_path / "zxm_用户_2022-04-26_UserList.csv"]
    assert paths[0].read_bytes() == CSV


def test_a_growingio_server_with_only_the_seeds_fields_works(tmp_path: Path) -> None:
    """No rows/bytes/error/expiresAt, stages the seed does not list, no Range support: still a full export."""
    stub = Stub(
        {
            "/v1/api/projects/WlGk4Daj/segment_profiles/seg_51activity/export_jobs": [
                httpx.Response(200, json={"id": "kqQeWeGr", "name": "DES-202205240136-5818534160000"})
            ],
            "/v1/api/job/result/kqQeWeGr": [
                httpx.Response(200, json={"stage": "NONE", "uris": []}),
                httpx.Response(200, json={"stage": "READY", "uris": []}),
                httpx.Response(200, json={"stage": "FINISH", "uris": [SEED_URI]}),
            ],
            "/download": [httpx.Response(200, content=CSV)],
        }
    )
    with Client(BASE + "/", "tok", transport=httpx.MockTransport(stub), backoff=FAST) as client:
        (path,) = client.export_segment("WlGk4Daj", "seg_51activity", [], file_format="json", dest=tmp_path / "o")
    submit, download = stub.seen[0][1], stub.seen[-1][1]
    assert json.loads(submit.content) == {"properties": [], "fileFormat": "json"}  # no csvHeaderType for json
    # the seed's rule, byte for byte: "http://{api-host}/download?file=" + uri
    assert str(download.url) == f"{BASE}/download?file={SEED_URI}"
    assert path.read_bytes() == CSV


def test_result_files_get_safe_local_names(tmp_path: Path) -> None:
    assert file_name_of("%2Fjobs%2Fresults%2FDES-1%2Fa%2F..%2F..%2Fevil.csv") == "evil.csv"
    assert file_name_of("%2Fjobs%2Fresults%2FDES-1%2Fx%3Ay%2A.csv") == "x_y_.csv"
    assert file_name_of("%2F..") == "UserList"
    uris = ["%2Fj%2Fa_part1.csv", "%2Fj%2Fa_part2.csv"]
    assert target_paths(uris, tmp_path / "out.csv") == [tmp_path / "out-1.csv", tmp_path / "out-2.csv"]
    assert target_paths(uris, tmp_path / "out.csv.gz") == [tmp_path / "out-1.csv.gz", tmp_path / "out-2.csv.gz"]
    assert target_paths(uris, tmp_path) == [tmp_path / "a_part1.csv", tmp_path / "a_part2.csv"]
