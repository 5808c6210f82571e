"""Fuzzing: schemathesis generates requests for every operation the app's own OpenAPI spec lists (whatever
endpoints exist when the test runs) and checks that none answers 5xx and every answer matches its schema.

Bounded and repeatable: a fixed number of examples per operation, derandomised (seeded) generation. Requests
carry an admin token, so they get past authentication into every handler (the 401 paths are covered by
test_security). The operations are driven explicitly rather than through ``schemathesis.pytest.from_fixture``,
which does not work with pytest 9 (it reads ``node._nodeid``).
"""

from __future__ import annotations

import time
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from segport.app import App
from segport.http.server import create_app
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
