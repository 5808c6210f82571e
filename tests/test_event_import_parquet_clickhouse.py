"""tests/test_event_import_parquet.py again, on ClickHouse (chdb, in process)."""

from __future__ import annotations

import pytest

from tests.test_event_import_parquet import *  # noqa: F403


@pytest.fixture
def engine_name() -> str:
    return "clickhouse"
