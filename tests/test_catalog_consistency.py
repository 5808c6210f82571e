"""The catalogue (metadata store) and the users table's columns (DuckDB or ClickHouse) stay one unit: a real
`segport` process killed between the two commits leaves a gap that the next start closes, and an engine that
refuses its ALTER TABLE leaves the catalogue as it was."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest

from segport.app import open_stores
from segport.domain.export import ExportSpec, FileFormat
from segport.engine.base import Target
from segport.roles.inline import build
from segport.services.data import SegmentSpec, catalog_entry, repair
from segport.settings import Settings
from tests.conftest import PROJECT, pid_at

ALL = {"key": "gio_id", "op": "gte", "value": 1}


class Profiles:
    """The profile database of one engine, read and changed straight (no segport code, no repair):
    DuckDB's file, or a ClickHouse database (the HTTP stand-in, shared with the killed subprocess)."""

    def __init__(self, engine: str, data: Path, request: pytest.FixtureRequest | None) -> None:
        self.engine, self.data, self.env = engine, data, {"SEGPORT_ENGINE": engine}
        self.settings = Settings(data_dir=data)
        if engine == "clickhouse":
            assert request is not None
            self.base, self.db = request.getfixturevalue("chdb_http"), f"r_{uuid.uuid4().hex[:12]}"
            url = f"{self.base}/{self.db}?compress=false"
            self.env["SEGPORT_CLICKHOUSE_URL"] = url
            self.settings = Settings(data_dir=data, engine="clickhouse", clickhouse_url=url)

    def _ch(self) -> Any:
        import clickhouse_connect

        return clickhouse_connect.get_client(dsn=self.base, compress=False, autogenerate_session_id=False)

    def sql(self, *statements: str) -> None:
        """Run statements on the users table, named ``USERS`` in them."""
        if self.engine == "duckdb":
            con = duckdb.connect(str(self.data / "profiles.duckdb"))
            for statement in statements:
                con.execute(statement.replace("USERS", f'"users_{PROJECT}"'))
            con.close()
            return
        client = self._ch()
        users = client.query(
            f"SELECT argMax(users, seq) FROM `{self.db}`.segport_snapshots WHERE project = {{p:String}}",
            parameters={"p": PROJECT},
        ).result_rows[0][0]
        for statement in statements:
            client.command(statement.replace("USERS", f"`{self.db}`.`{users}`"))
        client.close()

    def columns(self) -> dict[str, str]:
        """The users table's columns and their types, in the engine's spelling."""
        if self.engine == "duckdb":
            con = duckdb.connect(str(self.data / "profiles.duckdb"), read_only=True)
            try:
                rows = con.execute(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
                    [f"users_{PROJECT}"],
                ).fetchall()
            finally:
                con.close()
            return dict(rows)
        client = self._ch()
        rows = client.query(
            "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = "
            f"(SELECT argMax(users, seq) FROM `{self.db}`.segport_snapshots WHERE project = {{p:String}})",
            parameters={"d": self.db, "p": PROJECT},
        ).result_rows
        client.close()
        return dict(rows)

    def version(self) -> tuple[int, int]:
        """(snapshot sequence number — 0 on DuckDB, which has none —, data version)."""
        if self.engine == "duckdb":
            con = duckdb.connect(str(self.data / "profiles.duckdb"), read_only=True)
            row = con.execute("SELECT data_version FROM segport_state WHERE project = ?", [PROJECT]).fetchone()
            con.close()
            assert row is not None
            return 0, int(row[0])
        client = self._ch()
        seq, version = client.query(
            f"SELECT max(seq), argMax(data_version, seq) FROM `{self.db}`.segport_snapshots "
            "WHERE project = {p:String}",
            parameters={"p": PROJECT},
        ).result_rows[0]
        client.close()
        return int(seq), int(version)

    def type_of(self, type_name: str) -> str:
        return {"duckdb": DUCKDB_TYPES, "clickhouse": CLICKHOUSE_TYPES}[self.engine][type_name]

    def catalogue(self) -> dict[str, str]:
        """The catalogue's keys with their type names (string, int, double)."""
        stores = open_stores(self.settings)  # no engine: no repair either
        try:
            return {e.key: e.type_name for e in stores.meta.catalog(PROJECT).entries.values()}
        finally:
            stores.close()

    def consistent(self) -> bool:
        want = {k: self.type_of(t) for k, t in self.catalogue().items()}
        return self.columns() == {"gio_id": self.type_of("gio_id"), **want}


DUCKDB_TYPES = {"gio_id": "BIGINT", "string": "VARCHAR", "int": "BIGINT", "double": "DOUBLE"}
CLICKHOUSE_TYPES = {
    "gio_id": "Int64",
    "string": "Nullable(String)",
    "int": "Nullable(Int64)",
    "double": "Nullable(Float64)",
}


@pytest.fixture(params=["duckdb", "clickhouse"])
def profiles(tmp_path: Path, request: pytest.FixtureRequest) -> Profiles:
    profiles = Profiles(request.param, tmp_path / "data", request)
    app = build(profiles.settings)
    try:
        app.meta.create_project(PROJECT, "一致性")
        app.data.add_catalog_entries(
            PROJECT, [catalog_entry("usr_city", "城市"), catalog_entry("usr_age", "年龄", "int")]
        )
    finally:
        app.close()
    return profiles


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A DuckDB data dir (for the tests that reach into DuckDB's driver)."""
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


def _killed_at(profiles: Profiles, tmp_path: Path, point: str, *args: str) -> None:
    """Run `segport <args>` on the same databases until it reaches the pause point, then SIGKILL it there."""
    marker = tmp_path / f"{point}.pid"
    env = {**os.environ, **profiles.env, "SEGPORT_TEST_PAUSE_AT": point, "SEGPORT_TEST_PAUSE_FILE": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(profiles.data), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert pid_at(marker, "the pause point", 60, alive=proc) == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()


def test_kill_between_catalogue_add_and_alter_is_repaired_at_start(profiles: Profiles, tmp_path: Path) -> None:
    seq, version = profiles.version()
    _killed_at(
        profiles, tmp_path, "catalog-added", "catalog", "add", "--project", PROJECT, "usr_score", "--type", "double"
    )
    assert "usr_score" in profiles.catalogue() and "usr_score" not in profiles.columns()  # the gap the kill left
    app = build(profiles.settings)  # start-up closes it
    try:
        assert repair(app.meta, app.engine) == []  # nothing left to do on the next look
    finally:
        app.close()
    assert profiles.columns()["usr_score"] == profiles.type_of("double")
    assert profiles.consistent()
    new_seq, new_version = profiles.version()
    assert new_version == version + 1  # deduplication sees new data
    if profiles.engine == "clickhouse":
        assert new_seq == seq + 1  # published as the next snapshot
    app = build(profiles.settings)
    try:  # an export naming the key works
        app.data.create_segment(PROJECT, SegmentSpec(key="seg_all", name="全部", rule=ALL))
        score = app.meta.catalog(PROJECT).entries["usr_score"]
        out = tmp_path / "out"
        out.mkdir()
        spec = ExportSpec(file_format=FileFormat.CSV)
        files = app.engine.export(PROJECT, Target("segment", "seg_all"), [score], spec, out, lambda n: ["f"] * n).files
        assert b"usr_score" in files[0].read_bytes()
    finally:
        app.close()


def test_kill_between_catalogue_remove_and_drop_column_is_repaired_at_start(profiles: Profiles, tmp_path: Path) -> None:
    _killed_at(profiles, tmp_path, "catalog-removed", "catalog", "remove", "--project", PROJECT, "usr_city")
    assert "usr_city" not in profiles.catalogue() and "usr_city" in profiles.columns()
    version = profiles.version()
    build(profiles.settings).close()
    assert "usr_city" not in profiles.columns()
    assert profiles.consistent()
    assert profiles.version()[1] == version[1] + 1


def test_a_column_of_another_type_is_replaced_at_start(profiles: Profiles, caplog: pytest.LogCaptureFixture) -> None:
    """A column whose type is not its key's (a key removed and added again with another type, the column
    left from its earlier life): replaced at start, its old values are not this key's."""
    string = profiles.type_of("string")
    profiles.sql(
        "ALTER TABLE USERS DROP COLUMN usr_age",
        f"ALTER TABLE USERS ADD COLUMN usr_age {string}",
        "INSERT INTO USERS (gio_id, usr_age) VALUES (1, 'x')",
    )
    version = profiles.version()
    with caplog.at_level(logging.WARNING, logger="segport"):
        build(profiles.settings).close()
    repaired = [r.getMessage() for r in caplog.records if "repaired" in r.getMessage()]
    assert repaired == [
        f"catalogue and profile database differed, repaired: project {PROJECT}: replaced column usr_age ({string})"
    ]
    assert profiles.columns()["usr_age"] == profiles.type_of("int")
    assert profiles.consistent()
    assert profiles.version()[1] == version[1] + 1


def test_nothing_to_repair_changes_nothing(profiles: Profiles) -> None:
    version = profiles.version()
    app = build(profiles.settings)  # its start-up repair found nothing either
    try:
        assert repair(app.meta, app.engine) == []
    finally:
        app.close()
    assert profiles.version() == version  # no new snapshot, no new data version
    assert profiles.consistent()


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
    assert Profiles("duckdb", data, None).columns() == {"gio_id": "BIGINT", "usr_age": "BIGINT", "usr_CITY": "BIGINT"}
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
    assert Profiles("duckdb", data, None).consistent()
