"""Fuzzing: schemathesis generates requests for every operation the app's own OpenAPI spec lists (whatever
endpoints exist when the test runs) and checks that none answers 5xx and every answer matches its schema.

Bounded and repeatable: a fixed number of examples per operation, derandomised (seeded) generation. Requests
carry an admin token, so they get past authentication into every handler (the 401 paths are covered by
test_security). The operations are driven explicitly rather than through ``schemathesis.pytest.from_fixture``,
which does not work with pytest 9 (it reads ``node._nodeid``).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from segport.app import App
from segport.roles.inline import create_app
from tests.conftest import Seeded, auth

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
BUDGET_S = 120  # a guard against runaway generation; it takes ~5 s with the seed endpoints


def test_no_operation_answers_5xx_or_breaks_its_schema(app: App, seeded: Seeded) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(app, run_workers=False))
    headers = auth(seeded.admin_token)
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 3  # the seed's endpoints at least
    started = time.monotonic()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            fuzz()
        except Exception as exc:  # collect every failing operation, then report them all
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    elapsed = time.monotonic() - started
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
    assert elapsed < BUDGET_S, f"fuzzing took {elapsed:.0f} s for {len(operations)} operations"


# --- bodies of any JSON shape, and path segments of any text ------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYED = st.fixed_dictionaries(
    {},
    optional={
        "properties": JSON_VALUES,
        "fileFormat": JSON_VALUES,
        "bom": JSON_VALUES,
        "key": JSON_VALUES,
        "name": JSON_VALUES,
        "rule": JSON_VALUES,
        "type": JSON_VALUES,
    },
)


def test_json_bodies_of_any_shape_are_answered_4xx_or_2xx_never_5xx(app: App, seeded: Seeded) -> None:
    from fastapi.testclient import TestClient

    from tests.conftest import PROJECT

    admin = f"/admin/v1/projects/{PROJECT}"
    targets = [
        ("POST", f"/v1/api/projects/{PROJECT}/segment_profiles/seg_51activity/export_jobs", seeded.token),
        ("POST", admin + "/catalog", seeded.admin_token),
        ("PATCH", admin + "/catalog/usr_city", seeded.admin_token),
        ("POST", admin + "/segments", seeded.admin_token),
    ]
    with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as client:

        @given(body=JSON_VALUES | KEYED, which=st.sampled_from(targets))
        @settings(
            max_examples=150, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(body: Any, which: tuple[str, str, str]) -> None:
            method, url, token = which
            raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
            r = client.request(method, url, headers=auth(token), content=raw)
            assert r.status_code < 500, (body, r.text)
            if r.status_code >= 400:
                assert set(r.json()["error"]) == {"code", "message"}

        fuzz()


def test_path_segments_of_any_text_are_answered_4xx_never_5xx(app: App, seeded: Seeded) -> None:
    from fastapi.testclient import TestClient

    from tests.conftest import PROJECT

    with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as client:

        @given(segment=st.text(min_size=1, max_size=30))
        @settings(
            max_examples=150, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(segment: str) -> None:
            encoded = quote(segment.encode("utf-8", "surrogatepass"), safe="")
            for path in (
                f"/v1/api/job/result/{encoded}",
                f"/v1/api/projects/{PROJECT}/segment_profiles/{encoded}/users",
                f"/v1/api/projects/{PROJECT}/users/id_$basic_userId/{encoded}",
                f"/admin/v1/projects/{PROJECT}/segments/{encoded}",
            ):
                token = seeded.admin_token if path.startswith("/admin") else seeded.token
                r = client.get(path, headers=auth(token))
                assert r.status_code < 500, (segment, path, r.text)
                if any(ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF for c in segment):
                    assert r.status_code == 400, (segment, path, r.text)

        fuzz()
