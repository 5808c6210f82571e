"""tests/test_visitor_attributes.py again, on ClickHouse (chdb, in process)."""

from __future__ import annotations

import pytest

from tests.test_visitor_attributes import *  # noqa: F403


@pytest.fixture
def engine_name() -> str:
    return "clickhouse"


# the CLI's own commands open the DuckDB engine of their data dir: that test runs once, in the DuckDB module
del test_the_cli_imports_a_parquet_file_matched_on_the_device_id  # noqa: F821
