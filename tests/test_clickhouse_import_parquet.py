"""A Parquet users file whose columns are exactly their keys' types is loaded and checked by ClickHouse itself in
one pass (segport/engine/clickhouse/importer.py); every other file, and every file holding a value the DuckDB
import refuses or an identity twice, is read by the DuckDB import as before. Either way the two engines must
agree: the same refusal in the same words, or the same exported bytes, on a first load and on an upsert."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from segport.app import App
from segport.domain.export import ExportSpec, FileFormat
from segport.engine.base import Target
from segport.engine.clickhouse import importer
from segport.errors import ImportRejected
from segport.roles.inline import build
from segport.settings import Settings
from tests.conftest import ENGINES

CATALOG = """key,name,type
id_$basic_userId,用户,string
id_$anon,匿名,string[]
usr_s,文本,string
usr_i,整数,int
usr_d,比例,double
usr_day,日期,date
"""
COLS = ["id_$basic_userId", "id_$anon", "usr_s", "usr_i", "usr_d", "usr_day"]
_PROJECTS = (f"Parq{i:04d}" for i in itertools.count())

# the rows of a valid file, every awkward value of the types the one pass takes
GOOD = """SELECT * FROM (VALUES
    ('A', ['a1', 'a2'], '中文, "quoted"', 1::BIGINT, 100.0::DOUBLE, DATE '2020-02-29'),
    ('B', NULL, NULL, NULL, NULL, NULL),
    ('C', [], '', -9223372036854775807::BIGINT, 2.5e-7::DOUBLE, DATE '1900-01-01'),
    ('D', [''], 'line' || chr(8232) || 'sep' || chr(10) || 'nl' || chr(9) || 'tab', 0::BIGINT, 1e20::DOUBLE,
     DATE '2299-12-31'),
    ('E', ['x', 'y', 'x'], 'back\\slash/', 42::BIGINT, -0.0::DOUBLE, NULL)
) t("id_$basic_userId", "id_$anon", usr_s, usr_i, usr_d, usr_day)"""
# later the same users again (B, C) and a new one: known users keep their gio_id, identities accumulate
AGAIN = """SELECT * FROM (VALUES
    ('C', ['c1'], 'again', 7::BIGINT, 1.5::DOUBLE, DATE '2021-01-01'),
    ('F', ['f1'], 'new', NULL, NULL, NULL),
    ('B', ['b1', 'b2'], NULL, 3::BIGINT, NULL, DATE '2022-02-02')
) t("id_$basic_userId", "id_$anon", usr_s, usr_i, usr_d, usr_day)"""

ONE_PASS = {"good", "again", "subset", "int32"}
CASES = {  # name -> the SELECT written as the file
    "good": GOOD,
    "int32": """SELECT * FROM (VALUES ('A', 1::INTEGER)) t("id_$basic_userId", usr_i)""",
    "subset": """SELECT 'Z' || i AS "id_$basic_userId", i::BIGINT AS usr_i FROM range(3) t(i)""",
    # values the DuckDB import refuses: the one pass hands them over, and the message is the DuckDB import's
    "control": """SELECT * FROM (VALUES ('A', 'ok'), ('B', 'bad' || chr(1))) t("id_$basic_userId", usr_s)""",
    "null-match": """SELECT * FROM (VALUES ('A', 1::BIGINT), (NULL, 2::BIGINT)) t("id_$basic_userId", usr_i)""",
    "empty-match": """SELECT * FROM (VALUES ('A', 1::BIGINT), ('', 2::BIGINT)) t("id_$basic_userId", usr_i)""",
    "nan": """SELECT * FROM (VALUES ('A', 'nan'::DOUBLE)) t("id_$basic_userId", usr_d)""",
    "inf": """SELECT * FROM (VALUES ('A', 1.0::DOUBLE), ('B', 'inf'::DOUBLE)) t("id_$basic_userId", usr_d)""",
    "null-item": """SELECT * FROM (VALUES ('A', ['a', NULL])) t("id_$basic_userId", "id_$anon")""",
    "control-in-list": """SELECT * FROM (VALUES ('A', ['a' || chr(27)])) t("id_$basic_userId", "id_$anon")""",
    # files the one pass does not take at all
    "repeated": """SELECT * FROM (VALUES ('A', 1::BIGINT), ('B', 2::BIGINT), ('A', 3::BIGINT))
        t("id_$basic_userId", usr_i)""",
    "int-as-double": """SELECT * FROM (VALUES ('A', 1.0::DOUBLE)) t("id_$basic_userId", usr_i)""",
    "uint64": """SELECT * FROM (VALUES ('A', 1::UBIGINT)) t("id_$basic_userId", usr_i)""",
    "unknown-key": """SELECT * FROM (VALUES ('A', 1::BIGINT)) t("id_$basic_userId", usr_nope)""",
    "no-match-column": """SELECT * FROM (VALUES (1::BIGINT)) t(usr_i)""",
}


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[dict[str, App]]:
    tmp = tmp_path_factory.mktemp("parquet")
    built: dict[str, App] = {}
    for engine in ENGINES:
        settings: dict[str, Any] = {"data_dir": tmp / engine, "serve_workers": False}
        if engine == "clickhouse":
            folder = request.getfixturevalue("chdb_dir")
            settings |= {
                "engine": "clickhouse",
                "clickhouse_url": f"chdb://{folder}?database=p_{uuid.uuid4().hex[:12]}",
            }
        built[engine] = build(Settings(**settings))
    try:
        yield built
    finally:
        for app in built.values():
            app.close()


@pytest.fixture
def one_pass(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files ClickHouse loaded in one pass (a file the DuckDB import read instead is not listed)."""
    taken: list[str] = []
    load = importer._load_direct

    def spy(*args: Any, **kwargs: Any) -> int | None:
        n = load(*args, **kwargs)
        if n is not None:
            taken.append(args[3].path.name)
        return n

    monkeypatch.setattr(importer, "_load_direct", spy)
    return taken


def _parquet(folder: Path, name: str, select: str) -> Path:
    path = folder / f"{name}.parquet"
    with duckdb.connect() as con:
        con.execute(f"COPY ({select}) TO '{path}' (FORMAT PARQUET)")
    return path


def _exports(app: App, project: str, folder: Path) -> dict[str, bytes]:
    catalog = app.meta.catalog(project)
    entries = [catalog.entries[k] for k in COLS]
    out = {}
    folder.mkdir(exist_ok=True)
    for fmt in (FileFormat.CSV, FileFormat.JSON):
        where = folder / f"out-{project}-{fmt.value}"
        where.mkdir()
        result = app.engine.export(
            project, Target("tag", "id_$basic_userId"), entries, ExportSpec(file_format=fmt), where, lambda n: ["f"]
        )
        out[fmt.value] = result.files[0].read_bytes()
    return out


def _outcome(app: App, project: str, folder: Path, files: list[Path]) -> tuple[Any, ...]:
    app.meta.create_project(project, "表")
    app.data.import_catalog_csv(project, CATALOG)
    reports = []
    for path in files:
        try:
            r = app.data.import_users(project, path)
        except ImportRejected as exc:
            return ("refused", exc.message)
        reports.append((r.rows_read, r.inserted, r.updated))
    return ("stored", reports, _exports(app, project, folder))


@pytest.mark.parametrize("name", list(CASES))
def test_both_engines_agree_on_a_parquet_file(
    apps: dict[str, App], tmp_path: Path, one_pass: list[str], name: str
) -> None:
    path = _parquet(tmp_path, name, CASES[name])
    project = next(_PROJECTS)  # the same on both: messages name it
    seen = {engine: _outcome(app, project, tmp_path / engine, [path]) for engine, app in apps.items()}
    assert seen["clickhouse"] == seen["duckdb"]
    assert (name in ONE_PASS) == (one_pass == [path.name]), one_pass
    if name in ONE_PASS:
        assert seen["duckdb"][0] == "stored"
    elif name not in ("repeated", "int-as-double", "uint64"):
        assert seen["duckdb"][0] == "refused"


def test_an_upsert_in_one_pass_matches_duckdb(apps: dict[str, App], tmp_path: Path, one_pass: list[str]) -> None:
    files = [_parquet(tmp_path, "good", GOOD), _parquet(tmp_path, "again", AGAIN)]
    project = next(_PROJECTS)
    seen = {engine: _outcome(app, project, tmp_path / engine, files) for engine, app in apps.items()}
    assert seen["clickhouse"] == seen["duckdb"]
    assert seen["duckdb"][1] == [(5, 5, 0), (3, 1, 2)]
    assert b'"id_$anon":["b1","b2"]' in seen["duckdb"][2]["json"]  # B had none: accumulated from nothing
    assert one_pass == ["good.parquet", "again.parquet"]


def test_a_refused_one_pass_leaves_nothing_behind(apps: dict[str, App], tmp_path: Path) -> None:
    """The table the one pass began is dropped before the DuckDB import reads the file again and refuses it."""
    app = apps["clickhouse"]
    project = next(_PROJECTS)
    app.meta.create_project(project, "表")
    app.data.import_catalog_csv(project, CATALOG)
    engine: Any = app.engine
    tables = f"SHOW TABLES FROM {engine.db}"
    before = {r[0] for r in engine.client().query(tables).result_rows}
    with pytest.raises(ImportRejected, match="row 2: key usr_s"):
        app.data.import_users(project, _parquet(tmp_path, "control", CASES["control"]))
    assert {r[0] for r in engine.client().query(tables).result_rows} == before
