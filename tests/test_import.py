"""Profile import: identity resolution, upsert, null vs empty string, type checks, all or nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segport.app import App
from segport.errors import ImportRejected
from tests.conftest import CATALOG_CSV, PROJECT, pid_at, write_users_csv

ID = "id_$basic_userId"


@pytest.fixture
def project(app: App) -> App:
    app.meta.create_project(PROJECT, "示例项目")
    app.data.import_catalog_csv(PROJECT, CATALOG_CSV)
    return app


def users(app: App) -> dict[str, dict[str, Any]]:
    """Every user of the project by basic user id, read straight from the DuckDB table."""
    con = app.engine._con  # type: ignore[attr-defined]
    cur = con.cursor()
    names = [r[0] for r in cur.execute(f"DESCRIBE users_{PROJECT}").fetchall()]
    rows = cur.execute(f"SELECT * FROM users_{PROJECT} ORDER BY gio_id").fetchall()
    return {r[names.index(ID)]: dict(zip(names, r, strict=True)) for r in rows}


def imp(app: App, path: Path, **kw: Any) -> Any:
    return app.data.import_users(PROJECT, path, **kw)


def test_new_identities_get_monotonic_ids_in_file_order(project: App, tmp_path: Path) -> None:
    r = imp(project, write_users_csv(tmp_path / "a.csv", [{ID: "B"}, {ID: "A"}, {ID: "C"}], [ID]))
    assert (r.rows_read, r.inserted, r.updated) == (3, 3, 0)
    assert {k: v["gio_id"] for k, v in users(project).items()} == {"B": 1, "A": 2, "C": 3}


def test_ids_are_stable_across_reimports_and_never_reused(project: App, tmp_path: Path) -> None:
    imp(project, write_users_csv(tmp_path / "a.csv", [{ID: "A"}, {ID: "B"}], [ID]))
    r = imp(project, write_users_csv(tmp_path / "b.csv", [{ID: "C"}, {ID: "B"}, {ID: "D"}], [ID]))
    assert (r.rows_read, r.inserted, r.updated) == (3, 2, 1)
    assert {k: v["gio_id"] for k, v in users(project).items()} == {"A": 1, "B": 2, "C": 3, "D": 4}
    # a rolled-back import does not consume ids
    bad = write_users_csv(tmp_path / "bad.csv", [{ID: "E", "usr_age": "x"}], [ID, "usr_age"])
    with pytest.raises(ImportRejected):
        imp(project, bad)
    imp(project, write_users_csv(tmp_path / "c.csv", [{ID: "E"}], [ID]))
    assert users(project)["E"]["gio_id"] == 5


def test_absent_columns_are_untouched_and_present_ones_overwrite(project: App, tmp_path: Path) -> None:
    cols = [ID, "usr_gender", "usr_age"]
    imp(project, write_users_csv(tmp_path / "a.csv", [{ID: "A", "usr_gender": "男", "usr_age": "30"}], cols))
    imp(project, write_users_csv(tmp_path / "b.csv", [{ID: "A", "usr_city": "北京"}], [ID, "usr_city"]))
    u = users(project)["A"]
    assert (u["usr_gender"], u["usr_age"], u["usr_city"]) == ("男", 30, "北京")
    imp(project, write_users_csv(tmp_path / "c.csv", [{ID: "A", "usr_gender": None}], [ID, "usr_gender"]))
    u = users(project)["A"]
    assert (u["usr_gender"], u["usr_age"], u["usr_city"]) == (None, 30, "北京")  # null clears, others stay


def test_csv_empty_unquoted_is_null_and_quoted_empty_is_empty_string(project: App, tmp_path: Path) -> None:
    f = tmp_path / "n.csv"
    f.write_text(f'{ID},usr_gender,usr_city,usr_age\n"A",,"",\n"B","","x"," "\n', encoding="utf-8")
    imp(project, f)
    u = users(project)
    assert (u["A"]["usr_gender"], u["A"]["usr_city"], u["A"]["usr_age"]) == (None, "", None)
    assert (u["B"]["usr_gender"], u["B"]["usr_city"], u["B"]["usr_age"]) == ("", "x", None)  # blank int = null


def test_later_row_wins_within_one_file(project: App, tmp_path: Path) -> None:
    rows = [{ID: "A", "usr_age": "1"}, {ID: "B", "usr_age": "2"}, {ID: "A", "usr_age": "3"}]
    r = imp(project, write_users_csv(tmp_path / "a.csv", rows, [ID, "usr_age"]))
    assert (r.rows_read, r.inserted) == (3, 2)
    assert {k: (v["gio_id"], v["usr_age"]) for k, v in users(project).items()} == {"A": (1, 3), "B": (2, 2)}


def test_multi_valued_identities_accumulate_and_export_joined(project: App, tmp_path: Path) -> None:
    cols = [ID, "id_$anonymous_user"]
    imp(project, write_users_csv(tmp_path / "a.csv", [{ID: "A", "id_$anonymous_user": "d1||d2"}], cols))
    imp(project, write_users_csv(tmp_path / "b.csv", [{ID: "A", "id_$anonymous_user": "d2||d3"}], cols))
    assert users(project)["A"]["id_$anonymous_user"] == ["d1", "d2", "d3"]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parquet_and_jsonl_import_like_csv(project: App, tmp_path: Path, fmt: str) -> None:
    data = {
        ID: ["A", "B", "C"],
        "usr_age": [30, None, 41],
        "usr_score": [1.5, 2.0, None],
        "usr_gender": ["男", "", None],
        "id_$anonymous_user": [["d1", "d2"], None, ["d3"]],
    }
    if fmt == "parquet":
        path = tmp_path / "u.parquet"
        pq.write_table(pa.table(data), path)
    else:
        path = tmp_path / "u.jsonl"
        rows = [{k: v[i] for k, v in data.items()} for i in range(3)]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    r = imp(project, path)
    assert (r.rows_read, r.inserted) == (3, 3)
    u = users(project)
    assert [u[k]["usr_age"] for k in "ABC"] == [30, None, 41]
    assert [u[k]["usr_score"] for k in "ABC"] == [1.5, 2.0, None]
    assert [u[k]["usr_gender"] for k in "ABC"] == ["男", "", None]
    assert [u[k]["id_$anonymous_user"] for k in "ABC"] == [["d1", "d2"], None, ["d3"]]


def test_format_flag_overrides_the_extension(project: App, tmp_path: Path) -> None:
    path = write_users_csv(tmp_path / "users.txt", [{ID: "A"}], [ID])
    with pytest.raises(ImportRejected, match="--format"):
        imp(project, path)
    assert imp(project, path, file_format="csv").inserted == 1


GOOD = {
    "usr_age": ["0", "-12", "+7", " 42 ", "9223372036854775807"],
    "usr_score": ["1", "-1.5", ".5", "1e3", "2.5E-2"],
    "usr_since": ["2021-03-05", "1999-12-31", "2024-02-29"],
}
BAD = {
    "usr_age": ["1.5", "abc", "1e3", "0x10", "1_000", "9223372036854775808", "12a"],
    "usr_score": ["nan", "inf", "1,5", "abc", "--1"],
    "usr_since": ["2021-02-30", "2021-3-5", "05/03/2021", "2021-03-05 10:00:00", "x"],
}


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, vs in GOOD.items() for v in vs])
def test_type_check_accepts(project: App, tmp_path: Path, key: str, value: str) -> None:
    imp(project, write_users_csv(tmp_path / "a.csv", [{ID: "A", key: value}], [ID, key]))
    assert users(project)["A"][key] is not None


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, vs in BAD.items() for v in vs])
def test_type_check_rejects_naming_row_key_and_value(project: App, tmp_path: Path, key: str, value: str) -> None:
    rows = [{ID: "A", key: None}, {ID: "B", key: value}]
    with pytest.raises(ImportRejected) as exc:
        imp(project, write_users_csv(tmp_path / "a.csv", rows, [ID, key]))
    assert exc.value.message.startswith(f"row 2: key {key}: value {value!r} is not a valid")
    assert "\n" not in exc.value.message
    assert users(project) == {}


def test_parquet_type_checks(project: App, tmp_path: Path) -> None:
    pq.write_table(pa.table({ID: ["A", "B"], "usr_age": [3.0, 3.5]}), tmp_path / "f.parquet")
    with pytest.raises(ImportRejected, match=r"row 2: key usr_age: value '3.5'"):
        imp(project, tmp_path / "f.parquet")
    pq.write_table(pa.table({ID: ["A", "B"], "usr_score": [1.0, float("nan")]}), tmp_path / "g.parquet")
    with pytest.raises(ImportRejected, match=r"row 2: key usr_score"):
        imp(project, tmp_path / "g.parquet")
    pq.write_table(pa.table({ID: ["A"], "usr_age": [3.0]}), tmp_path / "h.parquet")
    imp(project, tmp_path / "h.parquet")
    assert users(project)["A"]["usr_age"] == 3


def test_jsonl_rejects_objects_and_booleans(project: App, tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text(f'{{"{ID}": "A", "usr_city": "x"}}\n{{"{ID}": "B", "usr_city": {{"a": 1}}}}\n')
    with pytest.raises(ImportRejected, match="row 2: key usr_city"):
        imp(project, path)
    path.write_text(f'{{"{ID}": "A", "usr_age": true}}\n')
    with pytest.raises(ImportRejected, match="row 1: key usr_age"):
        imp(project, path)


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        (f"{ID},usr_nope", '"A","x"', "column 'usr_nope' is not a key"),
        (f"{ID},gio_id", '"A","1"', "gio_id is assigned"),
        (f"{ID},ids_$basic_userId", '"A","A"', "appears twice"),
        ("usr_age", '"1"', "no column 'id_$basic_userId'"),
        (f"{ID},usr_age", ',"1"', "row 1: id_$basic_userId is empty"),
        (f"{ID},usr_age", '"","1"', "row 1: id_$basic_userId is empty"),
        (f"{ID},usr_age", '"A","1","extra"', "cannot read"),
    ],
)
def test_bad_files_are_rejected_with_one_line(
    project: App, tmp_path: Path, header: str, row: str, message: str
) -> None:
    f = tmp_path / "x.csv"
    f.write_text(f"{header}\n{row}\n", encoding="utf-8")
    with pytest.raises(ImportRejected, match=re.escape(message)) as exc:
        imp(project, f)
    assert "\n" not in exc.value.message


def test_match_on_another_identity(project: App, tmp_path: Path) -> None:
    project.data.import_catalog_csv(PROJECT, "key,name,type\nid_$email,邮箱,string\n")
    imp(project, write_users_csv(tmp_path / "a.csv", [{ID: "A", "id_$email": "a@x"}], [ID, "id_$email"]))
    r = imp(
        project,
        write_users_csv(tmp_path / "b.csv", [{"id_$email": "a@x", "usr_age": "5"}], ["id_$email", "usr_age"]),
        match="$email",
    )
    assert (r.inserted, r.updated) == (0, 1)
    assert users(project)["A"]["usr_age"] == 5
    # a multi-valued identity is matched by containment (tests/test_visitor_attributes.py); the file needs it
    with pytest.raises(ImportRejected, match=re.escape("the file has no column 'id_$anonymous_user' to match")):
        imp(project, tmp_path / "a.csv", match="id_$anonymous_user")


def test_bad_row_at_the_end_of_a_large_file_changes_nothing(project: App, tmp_path: Path) -> None:
    n = 50_000
    imp(
        project,
        write_users_csv(tmp_path / "a.csv", [{ID: f"U{i}", "usr_age": "1"} for i in range(100)], [ID, "usr_age"]),
    )
    before = users(project)
    version = project.engine.data_version(PROJECT)
    big = tmp_path / "big.csv"
    with open(big, "w", encoding="utf-8") as f:
        f.write(f"{ID},usr_age,usr_city\n")
        for i in range(n):
            f.write(f'"U{i}","{i}","城市{i}"\n')
        f.write('"LAST","12x",""\n')
    with pytest.raises(ImportRejected, match=rf"row {n + 1}: key usr_age: value '12x'"):
        imp(project, big)
    assert users(project) == before
    assert project.engine.data_version(PROJECT) == version
    # the same file without its last line imports, and keeps the 100 known ids
    lines = big.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]
    big.write_text("".join(lines), encoding="utf-8")
    r = imp(project, big)
    assert (r.rows_read, r.inserted, r.updated) == (n, n - 100, 100)
    assert users(project)["U5"]["gio_id"] == before["U5"]["gio_id"]


@pytest.mark.parametrize("known", [1, 9], ids=["few-updates-UPDATE", "most-updates-rewrite"])
def test_upsert_paths_agree(project: App, tmp_path: Path, known: int) -> None:
    cols = [ID, "id_$anonymous_user", "usr_age", "usr_city"]
    base = [{ID: f"U{i}", "id_$anonymous_user": f"a{i}", "usr_age": str(i), "usr_city": "北京"} for i in range(10)]
    imp(project, write_users_csv(tmp_path / "a.csv", base, cols))
    change = [{ID: f"U{i}", "id_$anonymous_user": f"b{i}||a{i}", "usr_age": None} for i in range(known)]
    change.append({ID: "NEW", "id_$anonymous_user": "n", "usr_age": "7"})
    r = imp(project, write_users_csv(tmp_path / "b.csv", change, [ID, "id_$anonymous_user", "usr_age"]))
    assert (r.inserted, r.updated) == (1, known)
    u = users(project)
    for i in range(10):
        changed = i < known
        assert u[f"U{i}"]["gio_id"] == i + 1
        assert u[f"U{i}"]["id_$anonymous_user"] == ([f"a{i}", f"b{i}"] if changed else [f"a{i}"])
        assert u[f"U{i}"]["usr_age"] == (None if changed else i)
        assert u[f"U{i}"]["usr_city"] == "北京"
    assert (u["NEW"]["gio_id"], u["NEW"]["usr_age"], u["NEW"]["usr_city"]) == (11, 7, None)


def test_a_killed_import_leaves_the_last_good_state(app: App, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    import duckdb

    app.meta.create_project(PROJECT, "示例项目")
    app.data.import_catalog_csv(PROJECT, CATALOG_CSV)
    imp(app, write_users_csv(tmp_path / "a.csv", [{ID: f"K{i}", "usr_age": "1"} for i in range(100)], [ID, "usr_age"]))
    before = users(app)
    data_dir = app.settings.data_dir
    app.close()
    big = tmp_path / "big.parquet"
    duckdb.connect().execute(
        f"COPY (SELECT 'N' || i AS \"{ID}\", i AS usr_age, 'x' || i AS usr_city "
        f"FROM range(2000000) t(i)) TO '{big}' (FORMAT PARQUET)"
    )
    # the import stops at a pause point (segport/testing_hooks.py) once its transaction has inserted every row,
    # before it commits, and is killed there: it cannot commit first, however fast the machine
    paused, log = tmp_path / "paused.pid", tmp_path / "import.log"
    env = {"SEGPORT_DATA_DIR": str(data_dir), "SEGPORT_TEST_PAUSE_AT": "import-written"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segport.cli", "users", "import", "--project", PROJECT, str(big)],
            env={**os.environ, **env, "SEGPORT_TEST_PAUSE_FILE": str(paused)},
            stderr=out,
        )
    try:
        assert pid_at(paused, "the import's pause point", alive=proc) == proc.pid
        assert "inserting 2000000 users" in log.read_text(encoding="utf-8")
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    from segport.roles.inline import build

    again = build(app.settings)
    try:
        assert users(again) == before
        r = again.data.import_users(PROJECT, write_users_csv(tmp_path / "b.csv", [{ID: "NEXT"}], [ID]))
        assert r.inserted == 1 and users(again)["NEXT"]["gio_id"] == 101
    finally:
        again.close()


def test_a_reader_keeps_its_snapshot_while_an_import_rewrites_the_table(project: App, tmp_path: Path) -> None:
    """What a split export relies on: one read transaction sees one state, whatever commits meanwhile."""
    rows = [{ID: f"U{i}", "usr_city": "旧"} for i in range(50)]
    imp(project, write_users_csv(tmp_path / "a.csv", rows, [ID, "usr_city"]))
    reader = project.engine._con.cursor()  # type: ignore[attr-defined]
    q = f'SELECT usr_city, count(*) FROM "users_{PROJECT}" GROUP BY ALL'
    reader.execute("BEGIN TRANSACTION")
    assert reader.execute(q).fetchall() == [("旧", 50)]
    new = [{ID: f"U{i}", "usr_city": "新"} for i in range(50)]
    assert imp(project, write_users_csv(tmp_path / "b.csv", new, [ID, "usr_city"])).updated == 50  # rewrite path
    assert reader.execute(q).fetchall() == [("旧", 50)]
    reader.execute("COMMIT")
    assert reader.execute(q).fetchall() == [("新", 50)]


def test_csv_with_bom_and_crlf_line_ends(project: App, tmp_path: Path) -> None:
    f = tmp_path / "w.csv"
    f.write_bytes(f'\ufeff{ID},usr_age,usr_city\r\n"A","1","x"\r\n"B",,"y, z"\r\n'.encode())
    imp(project, f)
    u = users(project)
    assert (u["A"]["usr_age"], u["B"]["usr_age"], u["B"]["usr_city"]) == (1, None, "y, z")


def test_parquet_reimport_paths(project: App, tmp_path: Path) -> None:
    """Parquet is read straight from the file (no staging) unless an identity repeats."""

    def write(name: str, ids: list[str], ages: list[Any]) -> Path:
        pq.write_table(pa.table({ID: ids, "usr_age": pa.array(ages, pa.float64())}), tmp_path / name)
        return tmp_path / name

    imp(project, write("a.parquet", [f"U{i}" for i in range(20)], [float(i) for i in range(20)]))
    r = imp(project, write("b.parquet", ["U3", "NEW1", "U5", "NEW2"], [30.0, 1.0, None, 2.0]))
    assert (r.rows_read, r.inserted, r.updated) == (4, 2, 2)
    u = users(project)
    assert (u["U3"]["usr_age"], u["U5"]["usr_age"], u["NEW1"]["gio_id"], u["NEW2"]["gio_id"]) == (30, None, 21, 22)
    before = users(project)
    with pytest.raises(ImportRejected, match=r"row 3: key usr_age: value '2.5'"):
        imp(project, write("c.parquet", [f"U{i}" for i in range(15)], [1.0, 1.0, 2.5] + [1.0] * 12))
    with pytest.raises(ImportRejected, match=r"row 2: key usr_age: value '2.5'"):
        imp(project, write("d.parquet", ["U1", "BRAND_NEW"], [1.0, 2.5]))
    assert users(project) == before
    r = imp(project, write("e.parquet", ["U1", "X", "U1", "X"], [1.0, 2.0, 3.0, 4.0]))  # repeats: staged
    assert (r.rows_read, r.inserted, r.updated) == (4, 1, 1)
    u = users(project)
    assert (u["U1"]["usr_age"], u["X"]["usr_age"], u["X"]["gio_id"]) == (3, 4, 23)


def test_gzipped_csv(project: App, tmp_path: Path) -> None:
    import gzip

    raw = write_users_csv(tmp_path / "u.csv", [{ID: "A", "usr_city": "北京"}], [ID, "usr_city"]).read_bytes()
    (tmp_path / "u.csv.gz").write_bytes(gzip.compress(raw))
    assert imp(project, tmp_path / "u.csv.gz").inserted == 1
    assert users(project)["A"]["usr_city"] == "北京"


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "empty.parquet"])
def test_an_empty_file_is_refused_by_name(project: App, tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(ImportRejected, match=f"^{name} is empty"):
        project.data.import_users(PROJECT, tmp_path / name)


def test_a_repeated_csv_column_is_named(project: App, tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("id_$basic_userId,usr_age,usr_age\nC1,1,2\n", encoding="utf-8")
    with pytest.raises(ImportRejected, match="column 'usr_age' appears twice in the header of dup.csv"):
        project.data.import_users(PROJECT, path)
