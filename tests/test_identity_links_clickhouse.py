"""tests/test_identity_links.py again, on ClickHouse (chdb, in process)."""

from __future__ import annotations

import pytest

from tests.test_identity_links import *  # noqa: F403


@pytest.fixture
def engine_name() -> str:
    return "clickhouse"
