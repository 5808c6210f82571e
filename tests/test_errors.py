"""Every error class renders through the one HTTP renderer as {"error": {"code", "message"}} with its status."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from segport.errors import SegportError, TooManyJobs, all_error_classes
from segport.http import errors as renderer


def _client_raising(exc: Exception) -> TestClient:
    api = FastAPI()
    renderer.install(api)

    @api.get("/boom")
    def boom() -> None:
        raise exc

    return TestClient(api, raise_server_exceptions=False)


def test_all_error_classes_have_distinct_codes_and_sane_statuses() -> None:
    classes = all_error_classes()
    assert len(classes) > 20
    own = [c.code for c in classes if "code" in vars(c)]  # a subclass may reuse its parent's code
    assert len(own) == len(set(own)), "two error classes declare the same code"
    for cls in classes:
        assert 400 <= cls.status < 600
        assert cls.code.isupper() and " " not in cls.code
        assert cls.exit_code != 0


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_error_class_renders_with_its_status_and_code(cls: type[SegportError]) -> None:
    r = _client_raising(cls("something precise went wrong: 'x'")).get("/boom")
    assert r.status_code == cls.status
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"code": cls.code, "message": "something precise went wrong: 'x'"}}


def test_error_headers_are_sent() -> None:
    r = _client_raising(TooManyJobs("slow down", headers={"Retry-After": "5"})).get("/boom")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "5"


def test_unexpected_exception_is_a_json_500_without_details() -> None:
    r = _client_raising(RuntimeError("secret internals")).get("/boom")
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "INTERNAL_ERROR"
    assert "secret" not in r.text
