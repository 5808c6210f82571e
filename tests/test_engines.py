"""Conformance: the same data and request give the same bytes and the same answers on every engine.

Each test builds one app per engine (DuckDB file; ClickHouse's engine through chdb, in process), loads the
same awkward data into both and compares what they write and answer: export files byte for byte, rule
memberships, pages, lookups, import reports and refusals. Expectations that do not depend on an engine are
spelled out too, so two engines that agreed on a wrong answer would still fail."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segport.app import App
from segport.domain.export import Compression, ExportSpec, FileFormat, HeaderType
from segport.engine.base import Target
from segport.errors import ImportRejected
from segport.roles.inline import build
from segport.services.data import SegmentSpec
from segport.settings import Settings
from tests.conftest import ENGINES, write_users_csv

P = "Conform1"
CATALOG = '''key,name,type
id_$basic_userId,用户ID,string
id_$device,设备,string[]
usr_name,"名字, ""全""",string
usr_big,大数,int
usr_ratio,比例,double
usr_day,日期,date
usr_labels,标签,string[]
usr_nums,数字,int[]
tag_level,等级,string
'''
COLS = [
    "id_$basic_userId",
    "id_$device",
    "usr_name",
    "usr_big",
    "usr_ratio",
    "usr_day",
    "usr_labels",
    "usr_nums",
    "tag_level",
]
AWKWARD: list[dict[str, str | None]] = [
    {
        "id_$basic_userId": "U1",
        "id_$device": "d1||d2",
        "usr_name": 'say "hi", 你好',
        "usr_big": "9223372036854775807",
        "usr_ratio": "100",
        "usr_day": "2021-03-05",
        "usr_labels": "a||b,c",
        "usr_nums": "1||-2",
        "tag_level": "高",
    },
    {
        "id_$basic_userId": "U2",
        "id_$device": None,
        "usr_name": "",
        "usr_big": "-9223372036854775808",
        "usr_ratio": "1e20",
        "usr_day": "1970-01-01",
        "usr_labels": None,
        "usr_nums": None,
        "tag_level": None,
    },
    {
        "id_$basic_userId": "U3",
        "id_$device": "x",
        "usr_name": "line1\nline2\r\nend",
        "usr_big": "0",
        "usr_ratio": "0.0001",
        "usr_day": None,
        "usr_labels": "",
        "usr_nums": "",
        "tag_level": "",
    },
    {
        "id_$basic_userId": "U4",
        "id_$device": "",
        "usr_name": "=SUM(A1:A2)",
        "usr_big": None,
        "usr_ratio": "-2.5e-7",
        "usr_day": "2099-12-31",
        "usr_labels": "=x||+y",
        "usr_nums": "7",
        "tag_level": "-1",
    },
    {
        "id_$basic_userId": "U5",
        "id_$device": "中||文",
        "usr_name": "tab\there\\back/slash\u2028sep",
        "usr_big": "42",
        "usr_ratio": "123456789.125",
        "usr_day": "2000-02-29",
        "usr_labels": "@at",
        "usr_nums": None,
        "tag_level": "中",
    },
    {
        "id_$basic_userId": "U6 ",
        "id_$device": None,
        "usr_name": "  spaced  ",
        "usr_big": "+17",
        "usr_ratio": "3",
        "usr_day": "2024-01-01",
        "usr_labels": None,
        "usr_nums": None,
        "tag_level": "低",
    },
]
RULES: dict[str, Any] = {
    "seg_not_big": {"not": {"key": "usr_big", "op": "gte", "value": 1}},
    "seg_ne": {"key": "tag_level", "op": "ne", "value": "高"},
    "seg_not_in": {"key": "tag_level", "op": "not_in", "value": ["高", "中"]},
    "seg_dev_eq": {"key": "id_$device", "op": "eq", "value": "d2"},
    "seg_dev_ne": {"key": "id_$device", "op": "ne", "value": "d2"},
    "seg_dev_null": {"key": "id_$device", "op": "is_null"},
    "seg_dev_any": {"key": "id_$device", "op": "in", "value": ["x", "文"]},
    "seg_lab_has": {"key": "usr_labels", "op": "contains", "value": "b"},
    "seg_nums": {"key": "usr_nums", "op": "not_in", "value": [7]},
    "seg_days": {"key": "usr_day", "op": "between", "value": ["2000-01-01", "2050-01-01"]},
    "seg_ratio": {
        "or": [{"key": "usr_ratio", "op": "lt", "value": 0}, {"key": "usr_ratio", "op": "gt", "value": 1e19}]
    },
    "seg_name": {
        "and": [
            {"key": "usr_name", "op": "contains", "value": ""},
            {"not": {"key": "usr_name", "op": "eq", "value": ""}},
        ]
    },
    "seg_str_order": {"key": "usr_name", "op": "gte", "value": "line"},
    "seg_gio": {"key": "gio_id", "op": "in", "value": [2, 4, 99]},
    "seg_empty": {"key": "usr_big", "op": "eq", "value": 5},
    "seg_all": {"key": "gio_id", "op": "gte", "value": 1},
}
# what the rules mean, written out (gio_id = file order); engines must agree with each other AND with this
RULE_MEMBERS = {
    "seg_not_big": [2, 3, 4],  # U4 has no usr_big: `not` is the complement, so it is in
    "seg_ne": [3, 4, 5, 6],  # U2 has no tag: ne never matches a missing value
    "seg_not_in": [3, 4, 6],
    "seg_dev_eq": [1],
    "seg_dev_ne": [3, 5],
    "seg_dev_null": [2, 4, 6],  # "" is no value for a multi-valued key
    "seg_dev_any": [3, 5],
    "seg_lab_has": [1],
    "seg_nums": [1],
    "seg_days": [1, 5, 6],
    "seg_ratio": [2, 4],
    "seg_name": [1, 3, 4, 5, 6],
    "seg_str_order": [1, 3, 5],  # code-point order: "s", "l", "t" >= "line"
    "seg_gio": [2, 4],
    "seg_empty": [],
    "seg_all": [1, 2, 3, 4, 5, 6],
}


def _app(tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> App:
    settings: dict[str, Any] = {"data_dir": tmp_path / engine, "serve_workers": False}
    db = f"c_{uuid.uuid4().hex[:12]}"
    if engine == "clickhouse":
        folder = request.getfixturevalue("chdb_dir")
        settings |= {"engine": "clickhouse", "clickhouse_url": f"chdb://{folder}?database={db}"}
    elif engine == "clickhouse-http":
        base = request.getfixturevalue("chdb_http")
        settings |= {"engine": "clickhouse", "clickhouse_url": f"{base}/{db}?compress=false"}
    return build(Settings(**settings))


def same(answers: dict[str, Any]) -> None:
    """Every engine answered what DuckDB answered."""
    for engine, answer in answers.items():
        assert answer == answers["duckdb"], engine


@pytest.fixture
def apps(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, App]]:
    """One app per engine (and ClickHouse again over HTTP, through the chdb stand-in of tests/chdb_http.py),
    each holding the awkward users and every rule segment."""
    built = {e: _app(tmp_path, e, request) for e in [*ENGINES, "clickhouse-http"]}
    try:
        for app in built.values():
            app.meta.create_project(P, "一致")
            app.data.import_catalog_csv(P, CATALOG)
            app.data.import_users(P, write_users_csv(tmp_path / "u.csv", AWKWARD, COLS))
            for key, rule in RULES.items():
                app.data.create_segment(P, SegmentSpec(key=key, name=f"名 {key}", rule=rule))
        yield built
    finally:
        for app in built.values():
            app.close()


def _export(app: App, tmp_path: Path, target: Target, keys: list[str], spec: ExportSpec, **kw: Any) -> list[bytes]:
    catalog = app.meta.catalog(P)
    out = tmp_path / f"out-{app.settings.engine}-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    columns = [catalog.entries[k] for k in keys]
    result = app.engine.export(P, target, columns, spec, out, lambda n: [f"f{i}" for i in range(n)], **kw)
    return [p.read_bytes() for p in result.files]


SPECS = [
    ExportSpec(file_format=FileFormat.CSV),
    ExportSpec(file_format=FileFormat.CSV, header=HeaderType.NAME),
    ExportSpec(file_format=FileFormat.JSON),
]


@pytest.mark.parametrize("spec", SPECS, ids=["csv", "csv-names", "json"])
@pytest.mark.parametrize("excel_safe", [False, True], ids=["plain", "excel-safe"])
def test_exports_are_byte_identical_on_every_engine(
    apps: dict[str, App], tmp_path: Path, spec: ExportSpec, excel_safe: bool
) -> None:
    target = Target("segment", "seg_all")
    files = {e: _export(a, tmp_path, target, COLS, spec, excel_safe=excel_safe) for e, a in apps.items()}
    same(files)
    data = files["duckdb"][0]
    if spec.file_format is FileFormat.JSON:
        first = json.loads(data.splitlines()[0])
        assert first["identifications"] == {"id_$basic_userId": "U1", "id_$device": ["d1", "d2"]}
        assert first["properties"]["usr_big"] == "9223372036854775807"
        assert first["properties"]["usr_ratio"] == "100.0"
        assert first["properties"]["usr_labels"] == "a||b,c"  # nothing for excel-safe quoting to change
        assert "\u2028".encode() in data and b"\\u2028" not in data  # raw, as DuckDB writes it
    else:
        assert b'"say ""hi"", \xe4\xbd\xa0\xe5\xa5\xbd"' in data
        assert b'"1","U1","d1||d2",' in data
        assert b'"1e+20"' in data and b'"0.0001"' in data and b'"-2.5e-07"' in data
        assert (b'"\'=SUM(A1:A2)"' if excel_safe else b'"=SUM(A1:A2)"') in data
        assert b'"3","U3","x","line1\nline2\r\nend","0","0.0001",,,,""\n' in data


@pytest.mark.parametrize("fmt", [FileFormat.CSV, FileFormat.JSON])
def test_parts_gzip_and_empty_results_are_identical(apps: dict[str, App], tmp_path: Path, fmt: FileFormat) -> None:
    seg = Target("segment", "seg_name")
    parts = {e: _export(a, tmp_path, seg, COLS, ExportSpec(file_format=fmt), max_file_rows=2) for e, a in apps.items()}
    same(parts)
    assert len(parts["duckdb"]) == 3
    packed = ExportSpec(file_format=fmt, compression=Compression.GZIP)
    gz = {e: _export(a, tmp_path, seg, COLS, packed) for e, a in apps.items()}
    plain = {e: _export(a, tmp_path, seg, COLS, ExportSpec(file_format=fmt)) for e, a in apps.items()}
    same({e: gzip.decompress(files[0]) for e, files in gz.items()})
    assert gzip.decompress(gz["duckdb"][0]) == plain["duckdb"][0]
    empty = {
        e: _export(a, tmp_path, Target("segment", "seg_empty"), COLS, ExportSpec(file_format=fmt))
        for e, a in apps.items()
    }
    same(empty)
    bare = {e: _export(a, tmp_path, seg, [], ExportSpec(file_format=fmt)) for e, a in apps.items()}
    same(bare)
    ids_only = {e: _export(a, tmp_path, seg, ["id_$device"], ExportSpec(file_format=fmt)) for e, a in apps.items()}
    same(ids_only)
    tag = {
        e: _export(a, tmp_path, Target("tag", "tag_level"), COLS, ExportSpec(file_format=fmt)) for e, a in apps.items()
    }
    same(tag)


def test_rule_segments_have_the_written_semantics_on_every_engine(apps: dict[str, App]) -> None:
    for engine, app in apps.items():
        got = {}
        for key in RULES:
            page = app.engine.members_page(P, Target("segment", key), [], 100, 0)
            got[key] = [int(r["gio_id"]) for r in page.rows]
        assert got == RULE_MEMBERS, engine


def test_pages_lookups_and_tag_counts_agree(apps: dict[str, App]) -> None:
    answers = {}
    for engine, app in apps.items():
        catalog = app.meta.catalog(P)
        cols = list(catalog.entries.values())
        page = app.engine.members_page(P, Target("segment", "seg_name"), cols, 2, 1)
        tag_page = app.engine.members_page(P, Target("tag", "tag_level"), cols, 10, 0)
        lookups = [
            app.engine.lookup_user(P, catalog, catalog.entries["id_$device"], "文"),
            app.engine.lookup_user(P, catalog, catalog.entries["id_$basic_userId"], "U6 "),
            app.engine.lookup_user(P, catalog, catalog.entries["id_$basic_userId"], "nobody"),
        ]
        counts = app.engine.tag_counts(P, [catalog.entries["tag_level"], catalog.entries["usr_labels"]])
        answers[engine] = (page, tag_page, lookups, counts, app.engine.count(P, Target("segment", "seg_ne")))
    same(answers)
    page, tag_page, lookups, counts, n = answers["duckdb"]
    assert page.total == 5 and [r["gio_id"] for r in page.rows] == ["3", "4"]
    assert page.rows[0]["id_$device"] == ["x"] and page.rows[1]["id_$device"] is None
    assert lookups[0] is not None and lookups[0]["gio_id"] == "5" and lookups[0]["usr_nums"] is None
    assert lookups[1] is not None and lookups[1]["id_$basic_userId"] == ["U6 "] and lookups[2] is None
    assert counts == {"tag_level": 5, "usr_labels": 3} and n == 4 and tag_page.total == 5


def test_upserts_and_refusals_agree(apps: dict[str, App], tmp_path: Path) -> None:
    cols = ["id_$basic_userId", "id_$device", "usr_big"]
    second = [
        # devices accumulate, new ones appended in file order, each once; a null clears usr_big
        {"id_$basic_userId": "U1", "id_$device": "d2||d4||d3||d4||d9", "usr_big": None},
        {"id_$basic_userId": "N1", "id_$device": "n", "usr_big": "5"},
        {"id_$basic_userId": "U3", "id_$device": None, "usr_big": "8"},
        {"id_$basic_userId": "N1", "id_$device": "m", "usr_big": "6"},  # repeated in the file: the later row wins
    ]
    bad = [{"id_$basic_userId": "N9", "id_$device": None, "usr_big": "7"}, {"id_$basic_userId": "U2", "usr_big": "1.5"}]
    out = {}
    for engine, app in apps.items():
        version = app.engine.data_version(P)
        report = app.data.import_users(P, write_users_csv(tmp_path / f"b-{engine}.csv", second, cols))
        after = app.engine.data_version(P)
        with pytest.raises(ImportRejected) as refused:
            app.data.import_users(P, write_users_csv(tmp_path / f"c-{engine}.csv", bad, cols))
        assert app.engine.data_version(P) == after > version  # the refused import changed nothing
        again = app.data.import_users(
            P, write_users_csv(tmp_path / f"d-{engine}.csv", [{"id_$basic_userId": "N2"}], cols[:1])
        )
        files = _export(app, tmp_path, Target("tag", "tag_level"), COLS, ExportSpec())
        everyone = app.engine.members_page(P, Target("segment", "seg_gio"), [], 10, 0).total
        catalog = app.meta.catalog(P)
        users = [
            app.engine.lookup_user(P, catalog, catalog.entries["id_$basic_userId"], u) for u in ("U1", "N1", "N2", "U3")
        ]
        out[engine] = (
            (report.rows_read, report.inserted, report.updated),
            refused.value.message,
            again.inserted,
            files,
            users,
            everyone,
        )
    same(out)
    counts, message, _, _, users, _ = out["duckdb"]
    assert counts == (4, 1, 2)
    assert "row 2" in message and "usr_big" in message
    assert (
        users[0] is not None
        and users[0]["id_$device"] == ["d1", "d2", "d4", "d3", "d9"]
        and users[0]["usr_big"] is None
    )
    assert users[1] is not None and users[1]["gio_id"] == "7" and users[1]["usr_big"] == "6"
    assert users[2] is not None and users[2]["gio_id"] == "8"  # the refused import used no gio_id
    assert users[3] is not None and users[3]["usr_name"] == "line1\nline2\r\nend" and users[3]["usr_big"] == "8"


def test_every_engine_reports_the_data_version_its_export_read(apps: dict[str, App], tmp_path: Path) -> None:
    """The job result's ``dataVersion`` comes from the engine: the version of the snapshot the file was read from."""
    for engine, app in apps.items():
        before = app.engine.data_version(P)
        out = tmp_path / f"v-{engine}"
        out.mkdir()
        first = app.engine.export(P, Target("tag", "tag_level"), [], ExportSpec(), out, lambda n: ["a"])
        assert first.data_version == before, engine
        app.data.import_users(P, write_users_csv(tmp_path / f"v-{engine}.csv", [{"id_$basic_userId": "V1"}], COLS[:1]))
        after = app.engine.data_version(P)
        assert after > before, engine
        second = app.engine.export(P, Target("tag", "tag_level"), [], ExportSpec(), out, lambda n: ["b"])
        assert second.data_version == after, engine


def test_id_list_segments_agree(apps: dict[str, App], tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("U1\n U3 \n\nnobody\nU1\n", encoding="utf-8")
    devices = tmp_path / "devices.txt"
    devices.write_text("d2\n文\nzzz\n", encoding="utf-8")
    out = {}
    for engine, app in apps.items():
        app.data.create_segment(P, SegmentSpec(key="seg_list", name="名单", members=ids, identity="id_$basic_userId"))
        app.data.create_segment(P, SegmentSpec(key="seg_dev", name="设备", members=devices, identity="id_$device"))
        pages = [app.engine.members_page(P, Target("segment", k), [], 10, 0) for k in ("seg_list", "seg_dev")]
        out[engine] = [[r["gio_id"] for r in p.rows] for p in pages]
    same(out)
    assert out["duckdb"] == [["1", "3"], ["1", "5"]]


def test_clickhouse_urls_name_the_database_and_never_show_the_password(tmp_path: Path) -> None:
    from segport.engine.clickhouse.engine import _shown, parse_url
    from segport.errors import SegportError

    assert parse_url("https://u:secret@ch.example:8443/profiles") == ("https://u:secret@ch.example:8443", "profiles")
    assert parse_url("http://ch:8123") == ("http://ch:8123", "default")
    assert parse_url(f"chdb://{tmp_path}?database=x") == (f"chdb:///{tmp_path.as_posix().lstrip('/')}", "x")
    assert parse_url(f"chdb://{tmp_path}")[1] == "segport"
    assert "secret" not in _shown("https://u:secret@ch.example:8443/profiles")
    with pytest.raises(SegportError):
        parse_url("clickhouse://ch:9000/db")


def test_clickhouse_drops_replaced_tables_once_and_never_looks_at_them_again(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """With a tiny ``clickhouse_keep_s`` each publish drops the tables earlier snapshots used; a table dropped
    once is not dropped again by later publishes (the history keeps its name for ever)."""
    import time

    from segport.engine.clickhouse import snapshots as snaps

    folder = request.getfixturevalue("chdb_dir")
    settings = Settings(
        data_dir=tmp_path / "ch",
        serve_workers=False,
        engine="clickhouse",
        clickhouse_url=f"chdb://{folder}?database=c_{uuid.uuid4().hex[:12]}",
        clickhouse_keep_s=0.001,
    )
    app = build(settings)
    try:
        app.meta.create_project(P, "一致")
        app.data.import_catalog_csv(P, CATALOG)
        for n in range(3):  # each import publishes a new users table
            rows = [{**AWKWARD[0], "id_$basic_userId": f"V{n}"}]
            app.data.import_users(P, write_users_csv(tmp_path / f"v{n}.csv", rows, COLS))
        engine: Any = app.engine
        client = engine.client()

        def users_tables() -> set[str]:
            return {r[0] for r in client.query(f"SHOW TABLES FROM {engine.db}").result_rows if r[0].startswith("u_")}

        time.sleep(0.05)  # older than keep_s: every replaced table may go now
        present = users_tables()
        dropped = snaps.collect(client, engine.db, P, settings.clickhouse_keep_s)
        assert set(dropped) <= present  # only tables still there: none dropped a second time
        current = snaps.read_current(client, engine.db, P)
        assert current is not None and users_tables() == {current.users}
        assert snaps.collect(client, engine.db, P, settings.clickhouse_keep_s) == []
    finally:
        app.close()
