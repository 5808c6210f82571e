"""tests/test_export_options.py (parts, bom, gzip with ``max_file_rows=4``) run again on ClickHouse (chdb).

A module of its own because it brings its own ``settings`` fixture."""

from __future__ import annotations

import pytest

from tests.test_export_options import *  # noqa: F403


@pytest.fixture
def engine_name() -> str:
    return "clickhouse"
