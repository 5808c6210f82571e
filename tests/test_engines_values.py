"""Conformance of awkward and bad imported values: every engine refuses the same files with the same one-line
error (in segport's words, naming the line or the row), and stores what it accepts exactly as written.

Each case is imported into a fresh project on DuckDB and on ClickHouse (chdb, in process); the refusal or the
exported CSV must be the one written here, so two engines agreeing on a wrong answer still fail
(docs/operations.md "Type checks", docs/limits.md, docs/clickhouse.md)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.domain.export import ExportSpec, FileFormat
from segport.engine.base import Target
from segport.engine.clickhouse import writer as ch_writer
from segport.errors import ImportRejected, OutOfMemory
from segport.roles.inline import build
from segport.settings import Settings
from tests.conftest import ENGINES, PROJECT, Seeded, auth

CATALOG = """key,name,type
id_$basic_userId,用户,string
usr_s,文本,string
usr_l,标签,string[]
usr_d,比例,double
usr_ds,比例们,double[]
usr_day,日期,date
usr_n,数字,int[]
"""
COLS = ["id_$basic_userId", "usr_s", "usr_l", "usr_d", "usr_ds", "usr_day", "usr_n"]
HEADER = '"gio_id","id_$basic_userId","usr_s","usr_l","usr_d","usr_ds","usr_day","usr_n"\n'
_PROJECTS = (f"Vals{i:04d}" for i in itertools.count())

TOO_BIG = "is beyond the range of a double (±1.7976931348623157e308)"
TOO_SMALL = "is too close to 0 for a double (it would be stored as 0)"
NULL_ITEM = "holds a null item (leave nulls out of a list: an empty or missing list is the null)"
NESTED = "holds a list or an object as an item (a multi-valued key takes a flat list of values)"
NOT_OBJECT = 'is not a JSON object: each line is one user, {"key": value, ...}'


def digits(n: int) -> str:
    return f"has {n} significant digits; a double keeps 17 (round it to 17 or fewer, or use a string key)"


# (file name, content, the exact refusal)
REFUSED = [
    ("inf.csv", "id_$basic_userId,usr_d\nA,1\nB,1e309\n", f"row 2: key usr_d: value '1e309' {TOO_BIG}"),
    ("ninf.csv", "id_$basic_userId,usr_d\nA,-1e309\n", f"row 1: key usr_d: value '-1e309' {TOO_BIG}"),
    ("inf.jsonl", '{"id_$basic_userId":"A","usr_d":-1e400}\n', f"row 1: key usr_d: value '-1e400' {TOO_BIG}"),
    ("under.csv", "id_$basic_userId,usr_d\nA,1e-400\n", f"row 1: key usr_d: value '1e-400' {TOO_SMALL}"),
    ("under.jsonl", '{"id_$basic_userId":"A","usr_d":1e-400}\n', f"row 1: key usr_d: value '1e-400' {TOO_SMALL}"),
    (
        "long.csv",
        "id_$basic_userId,usr_d\nA,123456789012345678901234567890\n",
        f"row 1: key usr_d: value '123456789012345678901234567890' {digits(29)}",
    ),
    (
        "long.jsonl",
        '{"id_$basic_userId":"A","usr_d":0.123456789012345678}\n',
        f"row 1: key usr_d: value '0.123456789012345678' {digits(18)}",
    ),
    (
        "long-string.jsonl",
        '{"id_$basic_userId":"A","usr_d":"1.00000000000000000001"}\n',
        f"row 1: key usr_d: value '1.00000000000000000001' {digits(21)}",
    ),
    (  # blank lines are lines, not rows; CRLF line ends
        "blank-rows.jsonl",
        '{"id_$basic_userId":"A","usr_d":1.5}\r\n\r\n{"id_$basic_userId":"B","usr_d":1e-400}\r\n',
        f"row 2: key usr_d: value '1e-400' {TOO_SMALL}",
    ),
    (  # a string key holding a number: every line is read in Python, with the same numbering
        "blank-rows-numbers.jsonl",
        '{"id_$basic_userId":"A","usr_s":5}\n\n{"id_$basic_userId":"B","usr_d":-1e999}\n',
        f"row 2: key usr_d: value '-1e999' {TOO_BIG}",
    ),
    (
        "list-inf.csv",
        "id_$basic_userId,usr_ds\nA,1||1e999\n",
        f"row 1: key usr_ds: value '1||1e999' holds '1e999', which {TOO_BIG}",
    ),
    (
        "list-under.jsonl",
        '{"id_$basic_userId":"A","usr_ds":[1.5,-1e-999]}\n',
        f"row 1: key usr_ds: value '[1.5, -1e-999]' holds '-1e-999', which {TOO_SMALL}",
    ),
    (
        "null-item.jsonl",
        '{"id_$basic_userId":"A","usr_l":["a","b"]}\n{"id_$basic_userId":"B","usr_l":["a",null,"b"]}\n',
        f"row 2: key usr_l: value '[a, NULL, b]' {NULL_ITEM}",
    ),
    (
        "null-last.jsonl",
        '{"id_$basic_userId":"A","usr_l":[1,null]}\n',
        f"row 1: key usr_l: value '[1, NULL]' {NULL_ITEM}",
    ),
    (
        "null-int.jsonl",
        '{"id_$basic_userId":"A","usr_n":[1,null]}\n',
        f"row 1: key usr_n: value '[1, NULL]' {NULL_ITEM}",
    ),
    (
        "nested.jsonl",
        '{"id_$basic_userId":"A","usr_l":[["a","b"],"c"]}\n',
        f"""row 1: key usr_l: value '[["a","b"], "c"]' {NESTED}""",
    ),
    (
        "nested-same.jsonl",
        '{"id_$basic_userId":"A","usr_l":[["a"],["b"]]}\n',
        f"row 1: key usr_l: value '[[a], [b]]' {NESTED}",
    ),
    (
        "date.jsonl",
        '{"id_$basic_userId":"A","usr_day":"2020-1-1"}\n',
        "row 1: key usr_day: value '2020-1-1' is not a valid date",
    ),
    ("date.csv", "id_$basic_userId,usr_day\nA,2020-1-1\n", "row 1: key usr_day: value '2020-1-1' is not a valid date"),
    (
        "bad.parquet",
        "this is not parquet\n",
        "cannot read bad.parquet as parquet: it is not a Parquet file (a Parquet file ends with the bytes PAR1)",
    ),
    (
        "dup.jsonl",
        '{"id_$basic_userId":"A"}\n{"id_$basic_userId":"B","usr_s":"x","usr_s":"y"}\n',
        "line 2 of dup.jsonl has the key 'usr_s' twice",
    ),
    (
        "broken.jsonl",
        '{"id_$basic_userId":"A"}\n{"id_$basic_userId": "B", "usr_s": tru}\n',
        "line 2 of broken.jsonl is not valid JSON: expecting value at column 36",
    ),
    (
        "blank-then-broken.jsonl",
        '{"id_$basic_userId":"A"}\n\n{"id_$basic_userId":"B"\n',
        "line 3 of blank-then-broken.jsonl is not valid JSON: expecting ',' delimiter at column 24",
    ),
    ("array.jsonl", '{"id_$basic_userId":"A"}\n[1,2,3]\n', f"line 2 of array.jsonl {NOT_OBJECT}"),
    ("only-array.jsonl", "[1,2,3]\n", f"line 1 of only-array.jsonl {NOT_OBJECT}"),
    (
        "nan.jsonl",
        '{"id_$basic_userId":"A","usr_d":NaN}\n',
        "line 1 of nan.jsonl holds NaN, which is not JSON (a double has no NaN or infinity)",
    ),
    ("empty-objects.jsonl", "{}\n{}\n", 'empty-objects.jsonl has no keys: each line is one user, {"key": value, ...}'),
]

# (file name, content, the exported CSV rows after the header)
ACCEPTED = [
    (
        "date-like-strings.jsonl",
        '{"id_$basic_userId":"A","usr_s":"2020-1-1","usr_l":["2020-01-01","12:00"]}\n',
        '"1","A","2020-1-1","2020-01-01||12:00",,,,\n',
    ),
    (
        "big-number-for-string.jsonl",
        '{"id_$basic_userId":"A","usr_s":123456789012345678901234567890}\n'
        '{"id_$basic_userId":"B","usr_s":1.50,"usr_l":[1e5,"x",-0]}\n'
        '{"id_$basic_userId":"C","usr_s":"\\u0041"}\n',
        '"1","A","123456789012345678901234567890",,,,,\n"2","B","1.50","1e5||x||-0",,,,\n"3","C","A",,,,,\n',
    ),
    (
        "exact-doubles.csv",
        "id_$basic_userId,usr_d,usr_ds\n"
        "A,0.12345678901234567,1.000000000000000000000||0\n"
        "B,1e308,0.0000\n"
        "C,4.9e-324,-0\n",
        '"1","A",,,"0.12345678901234566","1.0||0.0",,\n"2","B",,,"1e+308","0.0",,\n"3","C",,,"5e-324","-0.0",,\n',
    ),
    (
        "exact-doubles.jsonl",
        '{"id_$basic_userId":"A","usr_d":12345678901234567000,"usr_day":"2020-01-01"}\n'
        '{"id_$basic_userId":"B","usr_d":-2.5e-7,"usr_ds":[]}\n',
        '"1","A",,,"1.2345678901234567e+19",,"2020-01-01",\n"2","B",,,"-2.5e-07",,,\n',
    ),
]


def _app(tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> App:
    settings: dict[str, Any] = {"data_dir": tmp_path / engine, "serve_workers": False}
    if engine == "clickhouse":
        folder = request.getfixturevalue("chdb_dir")
        settings |= {"engine": "clickhouse", "clickhouse_url": f"chdb://{folder}?database=v_{uuid.uuid4().hex[:12]}"}
    return build(Settings(**settings))


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[dict[str, App]]:
    """One app per engine, shared by the module's cases (each case imports into a project of its own)."""
    tmp = tmp_path_factory.mktemp("values")
    built = {e: _app(tmp, e, request) for e in ENGINES}
    try:
        yield built
    finally:
        for app in built.values():
            app.close()


def _import(app: App, folder: Path, name: str, content: str) -> tuple[str, str]:
    """Import ``content`` as a file called ``name`` into a new project: ("refused", message) or ("csv", rows)."""
    project = next(_PROJECTS)
    app.meta.create_project(project, "值")
    app.data.import_catalog_csv(project, CATALOG)
    path = folder / name
    path.write_bytes(content.encode())
    try:
        app.data.import_users(project, path)
    except ImportRejected as exc:
        return "refused", exc.message
    out = folder / f"out-{project}"
    out.mkdir()
    catalog = app.meta.catalog(project)
    entries = [catalog.entries[k] for k in COLS]
    result = app.engine.export(project, Target("tag", "id_$basic_userId"), entries, ExportSpec(), out, lambda n: ["f"])
    data = result.files[0].read_text(encoding="utf-8")
    assert data.startswith(HEADER)
    return "csv", data[len(HEADER) :]


@pytest.mark.parametrize(("name", "content", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_every_engine_refuses_the_value_in_the_same_words(
    apps: dict[str, App], tmp_path: Path, name: str, content: str, message: str
) -> None:
    for engine, app in apps.items():
        folder = tmp_path / engine
        folder.mkdir()
        assert _import(app, folder, name, content) == ("refused", message), engine
        assert str(tmp_path) not in message  # the server's paths never reach a user


@pytest.mark.parametrize(("name", "content", "rows"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_every_engine_stores_accepted_values_as_written(
    apps: dict[str, App], tmp_path: Path, name: str, content: str, rows: str
) -> None:
    for engine, app in apps.items():
        folder = tmp_path / engine
        folder.mkdir()
        assert _import(app, folder, name, content) == ("csv", rows), engine


def test_a_json_lines_import_leaves_no_copy_behind(apps: dict[str, App], tmp_path: Path) -> None:
    """A file with numbers for string keys is read through a copy; the copy goes when the import ends."""
    for engine, app in apps.items():
        folder = tmp_path / engine
        folder.mkdir()
        before = sorted(p for p in app.settings.data_dir.rglob("*") if p.suffix == ".jsonl")
        _import(app, folder, "n.jsonl", '{"id_$basic_userId":1,"usr_s":2}\n')
        _import(app, folder, "m.jsonl", '{"id_$basic_userId":1,"usr_s":2,"usr_d":1e999}\n')
        assert sorted(p for p in app.settings.data_dir.rglob("*") if p.suffix == ".jsonl") == before, engine


@pytest.mark.parametrize("engine", ENGINES)
def test_an_export_out_of_memory_says_so_in_segport_words(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real export under a memory limit it cannot fit: the job's error names the setting, not the allocator."""
    settings: dict[str, Any] = {"data_dir": tmp_path / "d", "serve_workers": False}
    if engine == "clickhouse":
        folder = request.getfixturevalue("chdb_dir")
        settings |= {"engine": "clickhouse", "clickhouse_url": f"chdb://{folder}?database=m_{uuid.uuid4().hex[:12]}"}
    app = build(Settings(**settings))  # the users go in under the default budget
    try:
        app.meta.create_project("MemTest1", "内存")
        app.data.import_catalog_csv("MemTest1", "key,name,type\nid_$basic_userId,用户,string\nusr_s,文本,string\n")
        users = tmp_path / "u.csv"
        users.write_text("id_$basic_userId,usr_s\n" + "".join(f"U{i},{'x' * 200}{i}\n" for i in range(100_000)))
        app.data.import_users("MemTest1", users)
    finally:
        app.close()
    if engine == "clickhouse":
        monkeypatch.setitem(ch_writer.SETTINGS, "max_memory_usage", 1_000_000)  # ClickHouse's own limit, 1 MB
    app = build(Settings(**settings, duckdb_memory_limit="4MB"))  # and come out under a limit they cannot fit
    try:
        out = tmp_path / "out"
        out.mkdir()
        entry = app.meta.catalog("MemTest1").entries["usr_s"]
        with pytest.raises(OutOfMemory) as failed:
            app.engine.export(
                "MemTest1",
                Target("tag", "id_$basic_userId"),
                [entry],
                ExportSpec(file_format=FileFormat.JSON),
                out,
                lambda n: ["f"],
            )
    finally:
        app.close()
    expected = {
        "duckdb": "the export ran out of memory: raise SEGPORT_ENGINE_MEMORY_BYTES (DuckDB's limit is now 4MB) or export fewer columns",
        "clickhouse": (
            "the export ran out of memory: raise max_memory_usage for segport's ClickHouse user or export fewer columns"
        ),
    }
    assert failed.value.message == expected[engine]


def test_the_admin_api_names_the_users_file_and_its_line(client: TestClient, seeded: Seeded) -> None:
    """Through the server the same words name the uploaded file (not the server's spool copy) and its line."""
    h = auth(seeded.admin_token)
    url = f"/admin/v1/projects/{PROJECT}/users/import"
    cases = [
        (
            "mine.jsonl",
            b'{"id_$basic_userId":"A"}\n{"id_$basic_userId":tru}\n',
            "line 2 of mine.jsonl is not valid JSON",
        ),
        (
            "mine.jsonl",
            b'{"id_$basic_userId":12345678901234567890123}\n[1]\n',
            "line 2 of mine.jsonl is not a JSON object",
        ),
        ("mine.parquet", b"PAR1 not really", "cannot read mine.parquet as parquet: it is not a Parquet file"),
    ]
    for filename, content, start in cases:
        r = client.post(url, headers=h, params={"filename": filename}, content=content)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "IMPORT_REJECTED" and error["message"].startswith(start), error
