"""The OpenAPI document describes the server: schemathesis's command line (``st run``), with every check it has,
against a real ``segport serve`` over a socket, once with a project token and once with an admin token.

Every check runs (``--checks all``), ``positive_data_acceptance`` through tests/schemathesis_hooks.py: the same
check, except that a 400 ``UNKNOWN_KEY`` / ``TOO_MANY_PROPERTIES`` (keys a project's catalogue does not hold, which
no static document can list) is not a failure. A 414 is a refusal the document lists on every operation (a URI
over the byte bounds of segport.http.limits, which a length in characters cannot state) and is accepted as one.
Bounded and repeatable: a fixed seed, a modest number of examples per operation, one worker (the admin run
changes the project: one worker keeps the order of its requests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from segport.roles.inline import build
from segport.settings import Settings
from tests.conftest import PROJECT, LiveServer, Seeded, auth, seed_project, start_server, stop_server

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
ST = Path(sys.executable).with_name("st")
EXAMPLES = 12
SEED = 23
# the default refusals of negative_data_rejection, and 413/414: the body and URI bounds the document lists
NEGATIVE_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429"]
POSITIVE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "414", "429"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, Seeded]]:
    app = build(Settings(data_dir=tmp_path / "data", serve_workers=False))
    try:
        seeded = seed_project(app, tmp_path)
    finally:
        app.close()
    server = start_server(tmp_path / "data", tmp_path / "server.log")
    try:
        yield server, seeded
    finally:
        stop_server(server)


def st_run(base_url: str, token: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks.negative_data_rejection]\n"
        f"expected-statuses = {NEGATIVE_STATUSES!r}\n"
        "[checks.positive_data_acceptance]\n"
        f"expected-statuses = {POSITIVE_STATUSES!r}\n".replace("'", '"'),
        encoding="utf-8",
    )
    command = [
        str(ST),
        "--config-file",
        str(config),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {token}",
        "--request-timeout",
        "120",
        "--max-response-time",
        "120",  # a shared CI machine: a catalogue change alters the engine's tables
        "--no-color",
        "--output-truncate",
        "false",
        "--suppress-health-check",
        "all",
        *extra,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
    )


def test_the_document_describes_the_server_for_a_project_token(
    served: tuple[LiveServer, Seeded], tmp_path: Path
) -> None:
    server, seeded = served
    done = st_run(server.base_url, seeded.token, tmp_path)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]


def test_the_document_describes_the_admin_api_for_an_admin_token(
    served: tuple[LiveServer, Seeded], tmp_path: Path
) -> None:
    server, seeded = served
    done = st_run(server.base_url, seeded.admin_token, tmp_path, "--include-path-regex", "^/admin/")
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]


def test_a_405_allows_every_method_of_the_path(served: tuple[LiveServer, Seeded]) -> None:
    server, seeded = served
    admin = f"{server.base_url}/admin/v1/projects/{PROJECT}"
    cases = {
        f"{admin}/catalog": "GET, HEAD, POST",
        f"{admin}/catalog/usr_gender": "PATCH, DELETE",
        f"{admin}/catalog/import": "POST",  # not the key "import": no key is spelled so
        f"{admin}/segments": "GET, HEAD, POST",
        f"{admin}/segments/seg_51activity": "GET, HEAD, DELETE",
        f"{server.base_url}/download": "GET, HEAD",
        f"{server.base_url}/v1/api/job/abcdefgh/cancel": "POST",
    }
    for url, allow in cases.items():
        for method in ("OPTIONS", "PUT"):
            r = httpx.request(method, url, headers=auth(seeded.admin_token))
            assert r.status_code == 405, (method, url, r.text)
            assert r.headers["allow"] == allow, (method, url)
            assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    for method in ("PATCH", "DELETE"):
        r = httpx.request(method, f"{admin}/catalog/import", headers=auth(seeded.admin_token))
        assert (r.status_code, r.headers.get("allow")) == (405, "POST"), r.text
