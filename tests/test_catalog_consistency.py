"""The catalogue (metadata store) and the users table's columns (DuckDB) stay one unit: a real `segport`
process killed between the two commits leaves a gap that the next start closes, and an engine that refuses
its ALTER TABLE leaves the catalogue as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from segport.app import build
from segport.services.data import catalog_entry
from segport.settings import Settings
from tests.conftest import PROJECT


def _columns(data: Path) -> dict[str, str]:
    """The users table's columns, read straight from the DuckDB file (no segport code, no repair)."""
    con = duckdb.connect(str(data / "profiles.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
            [f"users_{PROJECT}"],
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


def _catalogue(data: Path) -> dict[str, str]:
    app = build(Settings(data_dir=data), with_engine=False)  # no engine: no repair either
    try:
        return {e.key: e.sql_type for e in app.meta.catalog(PROJECT).entries.values()}
    finally:
        app.close()


def _consistent(data: Path) -> bool:
    return _columns(data) == {"gio_id": "BIGINT", **_catalogue(data)}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    app = build(Settings(data_dir=data))
    try:
        app.meta.create_project(PROJECT, "一致性")
        app.data.add_catalog_entries(
            PROJECT, [catalog_entry("usr_city", "城市"), catalog_entry("usr_age", "年龄", "int")]
        )
    finally:
        app.close()
    return data


def _killed_at(data: Path, tmp_path: Path, point: str, *args: str) -> None:
    """Run `segport <args>` until it reaches the pause point, then SIGKILL it there."""
    marker = tmp_path / f"{point}.pid"
    env = {**os.environ, "SEGPORT_TEST_PAUSE_AT": point, "SEGPORT_TEST_PAUSE_FILE": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(data), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command never reached the pause point"
            time.sleep(0.05)
        assert int(marker.read_text()) == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()


def test_kill_between_catalogue_add_and_alter_is_repaired_at_start(data: Path, tmp_path: Path) -> None:
    _killed_at(data, tmp_path, "catalog-added", "catalog", "add", "--project", PROJECT, "usr_score", "--type", "double")
    assert "usr_score" in _catalogue(data) and "usr_score" not in _columns(data)  # the gap the kill left
    app = build(Settings(data_dir=data))  # start-up closes it
    try:
        assert app.data.repair() == []  # nothing left to do on the next look
    finally:
        app.close()
    assert _columns(data)["usr_score"] == "DOUBLE"
    assert _consistent(data)


def test_kill_between_catalogue_remove_and_drop_column_is_repaired_at_start(data: Path, tmp_path: Path) -> None:
    _killed_at(data, tmp_path, "catalog-removed", "catalog", "remove", "--project", PROJECT, "usr_city")
    assert "usr_city" not in _catalogue(data) and "usr_city" in _columns(data)
    build(Settings(data_dir=data)).close()
    assert "usr_city" not in _columns(data)
    assert _consistent(data)


def test_a_key_added_again_never_inherits_a_left_over_column(data: Path) -> None:
    """A column no key owns (left by a removal whose DROP COLUMN did not happen) while the key comes back
    with another type and another case: the column is replaced, its old values are not the new key's."""
    app = build(Settings(data_dir=data))
    try:
        app.data.remove_catalog_key(PROJECT, "usr_city")
        con = app.engine._con  # type: ignore[attr-defined]
        con.execute(f'ALTER TABLE "users_{PROJECT}" ADD COLUMN usr_city VARCHAR')  # the left-over
        con.execute(f"INSERT INTO \"users_{PROJECT}\" (gio_id, usr_city) VALUES (1, '北京')")
        app.data.add_catalog_entries(PROJECT, [catalog_entry("usr_CITY", "城市编号", "int")])
    finally:
        app.close()
    assert _columns(data) == {"gio_id": "BIGINT", "usr_age": "BIGINT", "usr_CITY": "BIGINT"}
    con = duckdb.connect(str(data / "profiles.duckdb"), read_only=True)
    assert con.execute(f'SELECT "usr_CITY" FROM "users_{PROJECT}"').fetchall() == [(None,)]
    con.close()


class _RefusingConnection:
    """The DuckDB driver with ALTER TABLE failing as it does on a full disk (the world outside segport)."""

    def __init__(self, real: duckdb.DuckDBPyConnection) -> None:
        self._real = real

    def cursor(self) -> Any:
        return _RefusingCursor(self._real.cursor())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _RefusingCursor:
    def __init__(self, real: duckdb.DuckDBPyConnection) -> None:
        self._real = real

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("ALTER TABLE"):
            raise duckdb.IOException("IO Error: could not write to the write-ahead log: No space left on device")
        return self._real.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_failing_alter_leaves_the_catalogue_as_it_was(data: Path) -> None:
    from segport.errors import SchemaChangeFailed

    app = build(Settings(data_dir=data))
    real = app.engine._con  # type: ignore[attr-defined]
    app.engine._con = _RefusingConnection(real)  # type: ignore[attr-defined]
    try:
        with pytest.raises(SchemaChangeFailed) as caught:
            app.data.add_catalog_entries(PROJECT, [catalog_entry("usr_score", "积分", "double")])
        assert caught.value.status == 503 and "No space left" in caught.value.message
        with pytest.raises(SchemaChangeFailed):
            app.data.remove_catalog_key(PROJECT, "usr_city")
        # an update of an existing key is kept (it needs no new column)
        with pytest.raises(SchemaChangeFailed):
            app.data.add_catalog_entries(
                PROJECT, [catalog_entry("usr_city", "所在城市"), catalog_entry("usr_score", "积分", "double")]
            )
        catalog = app.meta.catalog(PROJECT)
        assert "usr_score" not in catalog and "usr_city" in catalog
        assert catalog.entries["usr_city"].name == "所在城市"
    finally:
        app.engine._con = real  # type: ignore[attr-defined]
        app.close()
    assert _consistent(data)
