"""Every error the server can answer becomes the client's exception for its code; jobs that fail, expire or
take too long raise theirs. Mostly against a real segport app in-process; foreign servers are stubs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.client import (
    ApiError,
    Client,
    FileNotFound,
    InvalidArgument,
    InvalidBody,
    JobExpired,
    JobFailed,
    JobNotFound,
    PayloadTooLarge,
    ProjectNotFound,
    SegmentNotFound,
    ServerError,
    TooManyJobs,
    TooManyProperties,
    Unauthorized,
    UnknownKey,
    WaitTimeout,
)
from segport.client.errors import BY_CODE
from segport.errors import SegportError, all_error_classes
from segport.roles.inline import build, create_app
from segport.settings import Settings
from segport.store.models import utcnow
from segport.worker import Worker
from tests.client_support import BASE, FAST, InProcess
from tests.conftest import OTHER_PROJECT, PROJECT, SEGMENT, Seeded, seed_project

KEYS = ["id_$basic_userId", "usr_city"]


@pytest.fixture
def idle(seeded: Seeded) -> Iterator[InProcess]:
    """segport in-process with no workers running: jobs stay queued until the test runs them."""
    with TestClient(create_app(seeded.app, run_workers=False)) as tc:
        yield InProcess(tc, seeded.token)


def make_app(tmp_path: Path, **overrides: object) -> App:
    settings = Settings(
        data_dir=tmp_path / "data", serve_workers=False, heartbeat_s=0.2, lease_s=5, poll_interval_s=0.2, **overrides
    )  # type: ignore[arg-type]
    return build(settings)


# --- error answers from segport -------------------------------------------------------------------
def test_unknown_segment_is_segment_not_found(idle: InProcess) -> None:
    with idle.client() as client, pytest.raises(SegmentNotFound) as exc:
        client.submit_segment_export(PROJECT, "seg_missing", KEYS)
    assert exc.value.status == 404 and exc.value.code == "SEGMENT_NOT_FOUND"
    assert "seg_missing" in exc.value.message


def test_61_properties_is_too_many_properties(idle: InProcess) -> None:
    with idle.client() as client, pytest.raises(TooManyProperties) as exc:
        client.submit_segment_export(PROJECT, SEGMENT, [f"usr_k{i}" for i in range(61)])
    assert exc.value.status == 400 and exc.value.exit_code == 2


def test_unknown_key_is_unknown_key(idle: InProcess) -> None:
    with idle.client() as client, pytest.raises(UnknownKey, match="usr_nope"):
        client.submit_segment_export(PROJECT, SEGMENT, ["usr_nope"])


def test_unknown_body_field_is_invalid_body(idle: InProcess) -> None:
    with idle.client() as client, pytest.raises(InvalidBody, match="bogus"):
        client.submit_segment_export(PROJECT, SEGMENT, KEYS, extra={"bogus": 1})


def test_huge_body_is_payload_too_large(idle: InProcess) -> None:
    with idle.client() as client, pytest.raises(PayloadTooLarge):
        client.submit_segment_export(PROJECT, SEGMENT, ["usr_" + "x" * 100] * 12_000)


def test_bad_token_is_unauthorized(idle: InProcess) -> None:
    with idle.client(token="not-a-token") as client, pytest.raises(Unauthorized) as exc:
        client.submit_segment_export(PROJECT, SEGMENT, KEYS)
    assert exc.value.exit_code == 3


def test_another_projects_job_and_project_are_not_found(idle: InProcess, seeded: Seeded) -> None:
    with idle.client() as mine, idle.client(token=seeded.other_token) as theirs:
        job = mine.submit_segment_export(PROJECT, SEGMENT, KEYS)
        with pytest.raises(JobNotFound):
            theirs.job_result(job)
        with pytest.raises(ProjectNotFound):
            mine.submit_segment_export(OTHER_PROJECT, SEGMENT, KEYS)


def test_unknown_download_uri_is_file_not_found(idle: InProcess, tmp_path: Path) -> None:
    with idle.client() as client, pytest.raises(FileNotFound):
        client.download("%2Fjobs%2Fresults%2FDES-202601010000-1%2Fx.csv", tmp_path / "x.csv")
    assert list(tmp_path.glob("*x.csv*")) == []  # neither the file nor a .part is left


def test_failed_job_raises_job_failed_with_the_servers_message(idle: InProcess, seeded: Seeded) -> None:
    with idle.client() as client:
        job = client.submit_segment_export(PROJECT, SEGMENT, KEYS)
        seeded.app.data.remove_catalog_key(PROJECT, "usr_city")  # the job now asks for a key that is gone
        Worker(seeded.app, threads=1).run_until_empty()
        with pytest.raises(JobFailed) as exc:
            client.wait(job, timeout=10)
    assert exc.value.code == "UNKNOWN_KEY"
    assert "usr_city" in exc.value.message and "no longer in the catalogue" in exc.value.message
    assert exc.value.result.stage == "ERROR" and exc.value.exit_code == 6


def test_wait_gives_up_after_its_timeout(idle: InProcess) -> None:
    with idle.client() as client:
        job = client.submit_segment_export(PROJECT, SEGMENT, KEYS)
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as exc:
            client.wait(job, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 5.0  # it gave up (the bound a slow machine can stretch)
    assert exc.value.result is not None and exc.value.result.stage == "NONE"
    assert exc.value.exit_code == 7


def test_expired_job_is_job_expired(tmp_path: Path) -> None:
    app = make_app(tmp_path, result_ttl_s=3600)  # a slow machine cannot expire it before it is seen finished
    try:
        seeded = seed_project(app, tmp_path)
        with TestClient(create_app(app, run_workers=False)) as tc, InProcess(tc, seeded.token).client() as client:
            job = client.submit_segment_export(PROJECT, SEGMENT, KEYS)
            Worker(app, threads=1).run_until_empty()
            (uri,) = client.wait(job, timeout=10).uris
            assert app.exports.expire(now=utcnow() + timedelta(seconds=3601)) == 1  # the janitor, an hour later
            with pytest.raises(JobExpired) as exc:
                client.job_result(job)
            assert exc.value.status == 410
            with pytest.raises(JobExpired):
                client.download(uri, tmp_path / "late.csv")
    finally:
        app.close()


def test_full_queue_is_too_many_jobs_with_retry_after(tmp_path: Path) -> None:
    app = make_app(tmp_path, max_queued_jobs_per_project=1)
    try:
        seeded = seed_project(app, tmp_path)
        with (
            TestClient(create_app(app, run_workers=False)) as tc,
            InProcess(tc, seeded.token).client(retries=0) as client,
        ):
            client.submit_segment_export(PROJECT, SEGMENT, KEYS)
            with pytest.raises(TooManyJobs) as exc:
                client.submit_segment_export(PROJECT, SEGMENT, ["usr_gender"])
        assert exc.value.status == 429 and exc.value.retry_after == 5.0 and exc.value.exit_code == 5
    finally:
        app.close()


# --- the mapping itself ---------------------------------------------------------------------------
@pytest.mark.parametrize("server_error", all_error_classes(), ids=lambda c: c.__name__)
def test_every_server_error_maps_to_a_client_error(server_error: type[SegportError]) -> None:
    """Each of segport's error classes, rendered as the server renders it, raises the client class of that
    code (or, for codes the export API never answers, the class of its status) with code and message kept."""
    rendered = server_error("it went wrong")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(rendered.status, json=rendered.to_dict())

    with Client(BASE, "t", transport=httpx.MockTransport(handler), retries=0) as client, pytest.raises(ApiError) as exc:
        client.job_result("abcd1234")
    err = exc.value
    assert (err.status, err.code, err.message) == (rendered.status, rendered.code, "it went wrong")
    if rendered.code in BY_CODE:
        assert type(err) is BY_CODE[rendered.code]
        assert err.exit_code == server_error.exit_code
    elif rendered.status >= 500:
        assert isinstance(err, ServerError)


def test_a_foreign_servers_plain_text_500_is_a_server_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:  # what GrowingIO's docs show for an unknown segment
        return httpx.Response(500, text="Internal Server Error")

    with Client(BASE, "t", transport=httpx.MockTransport(handler)) as client, pytest.raises(ServerError) as exc:
        client.submit_segment_export(PROJECT, "seg_x")
    assert exc.value.message == "Internal Server Error" and exc.value.code == "INTERNAL_ERROR"


def test_a_foreign_servers_code_message_body_is_mapped_by_code() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"code": "SEGMENT_NOT_FOUND", "message": "no such segment"})

    with Client(BASE, "t", transport=httpx.MockTransport(handler)) as client, pytest.raises(SegmentNotFound):
        client.submit_segment_export(PROJECT, "seg_x")


@pytest.mark.parametrize(
    "kwargs", [{"file_format": "xml"}, {"header": "label"}, {"properties": "usr_gender"}, {"segment": ""}]
)
def test_bad_arguments_are_refused_before_any_request(kwargs: dict[str, object]) -> None:
    sent: list[httpx.Request] = []
    args: dict[str, object] = {"project": PROJECT, "segment": SEGMENT, **kwargs}
    with (
        Client(
            BASE, "t", transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200)), backoff=FAST
        ) as client,
        pytest.raises(InvalidArgument),
    ):
        client.submit_segment_export(**args)  # type: ignore[arg-type]
    assert sent == []
