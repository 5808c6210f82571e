"""The engine-level tests of other modules, run again on ClickHouse (chdb, in process).

Each module below tests behaviour through the app (HTTP API, services) with engine-independent expectations
(tests/expected.py writes the files out by hand), so running them on a second engine checks it the same way.
tests/test_import.py and tests/test_segments.py are not among them: they read the DuckDB file directly;
tests/test_engines.py covers imports and rule semantics (against a written-out oracle) on both engines.
tests/test_engines.py adds the byte-for-byte comparison of both engines on awkward data."""

from __future__ import annotations

import pytest

from tests.test_api_family import *  # noqa: F403
from tests.test_api_tolerance import *  # noqa: F403
from tests.test_seed_api import *  # noqa: F403


@pytest.fixture
def engine_name() -> str:
    return "clickhouse"
