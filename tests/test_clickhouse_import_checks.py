"""The one-pass Parquet load on ClickHouse (segport/engine/clickhouse/importer.py) finds the control characters the
DuckDB import refuses with a byte test per column (``translate`` to one byte, one search of the column) instead
of the regex over each row's joined texts it used before. Here every code point below U+00A0, some longer
characters and some invalid UTF-8, at the start, middle and end of each kind of text column (the match key, a
text key, an item of a list), are put through both conditions row by row: the new one flags exactly the rows the
old one flagged and the rows the DuckDB import's own pattern refuses. A refused file still gets the DuckDB
import's message, naming its first bad row, on both engines."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segport.domain.keys import Catalog, CatalogEntry, parse_key, parse_type
from segport.engine.clickhouse import importer
from segport.engine.clickhouse.engine import ClickHouseEngine
from segport.engine.clickhouse.sql import ch_string
from segport.engine.duckdb.import_columns import CONTROL_RE
from tests.test_clickhouse_import_parquet import CATALOG, _outcome, _parquet, apps, one_pass  # noqa: F401

MATCH = "id_$basic_userId"
# the condition of a bad text row before this change (segport/engine/clickhouse/importer.py at 94d0e7f)
OLD_BAD = (
    "(NOT isValidUTF8(ifNull(`id_$basic_userId`, ''))) OR (NOT isValidUTF8(ifNull(usr_s, ''))) OR "
    "arrayExists(x -> isNull(x) OR NOT isValidUTF8(assumeNotNull(x)), `id_$anon`) OR "
    "ifNull(`id_$basic_userId`, '') = '' OR "
    "match(concat(ifNull(`id_$basic_userId`, ''), arrayStringConcat(arrayMap(x -> ifNull(x, ''), `id_$anon`)), "
    f"ifNull(usr_s, '')), {ch_string(CONTROL_RE)})"
)
INVALID = [b"\x80", b"\xbf", b"\xe4\xb8", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff", b"\xfe"]
LONGER = ["中", "\u2028", "\U0001f600", "é"]


def _values() -> list[bytes]:
    """Each text probed, three ways: alone between letters, leading, trailing."""
    pieces = [chr(c).encode() for c in range(0xA0)] + [s.encode() for s in LONGER] + INVALID
    pieces += [b"\x01\xff", "中\x7f".encode(), b"\xe4\xb8\x1b"]  # a bad byte beside another kind of fault
    return [v for p in pieces for v in (b"a" + p + b"b", p + b"ab", b"ab" + p)]


def _refused(value: bytes) -> bool:
    """The DuckDB import's verdict on one text: not UTF-8, or a character its pattern refuses."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return re.search(CONTROL_RE, text) is not None


def _strings(values: list[bytes]) -> pa.Array:
    """Parquet text as it is in the file, invalid UTF-8 included (pyarrow would refuse to build it)."""
    return pa.array(values, type=pa.binary()).view(pa.string())


def _write(path: Path, values: list[bytes]) -> list[bool]:
    """One row per value and column it is put in; returns whether the DuckDB import refuses each row."""
    ids: list[bytes] = []
    anon: list[list[bytes]] = []
    texts: list[bytes] = []
    expected: list[bool] = []
    for i, v in enumerate(values):
        for where in ("id", "list", "text"):
            ids.append(f"U{i}-{where}-".encode() + v if where == "id" else f"U{i}-{where}".encode())
            anon.append([b"x", v] if where == "list" else [b"x"])
            texts.append(v if where == "text" else b"plain")
            expected.append(_refused(v))
    offsets = pa.array([0, *itertools.accumulate(len(row) for row in anon)], type=pa.int32())
    items = _strings([item for row in anon for item in row])
    table = pa.table(
        {
            MATCH: _strings(ids),
            "id_$anon": pa.ListArray.from_arrays(offsets, items),
            "usr_s": _strings(texts),
            "usr_i": pa.array(range(len(ids)), type=pa.int64()),
        }
    )
    pq.write_table(table, path)
    return expected


def _catalog() -> Catalog:
    entries = []
    for line in CATALOG.strip().splitlines()[1:]:
        raw, name, type_name = line.split(",")
        kind, key = parse_key(raw)
        value_type, multi = parse_type(type_name)
        entries.append(CatalogEntry(key, kind, name, value_type, multi))
    return Catalog(entries)


@pytest.fixture(scope="module")
def engine(chdb_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseEngine]:
    e = ClickHouseEngine(
        f"chdb://{chdb_dir}?database=c_{uuid.uuid4().hex[:12]}", scratch=tmp_path_factory.mktemp("checks")
    )
    try:
        yield e
    finally:
        e.close()


def test_the_byte_test_flags_exactly_the_rows_the_regex_did(engine: ClickHouseEngine, tmp_path: Path) -> None:
    path = tmp_path / "probe.parquet"
    expected = _write(path, _values())
    plan = importer._direct_plan(engine, _catalog(), path, "parquet", MATCH)
    assert plan is not None  # every column is its key's type: the one pass takes the file
    assert "match(" not in plan.bad  # no regex left in the condition
    rows = (
        engine.client()
        .query(f"SELECT usr_i, ({plan.bad}), ({OLD_BAD}) FROM file({ch_string(str(path))}, 'Parquet') ORDER BY usr_i")
        .result_rows
    )
    assert len(rows) == len(expected) > 1000
    new = [bool(r[1]) for r in rows]
    old = [bool(r[2]) for r in rows]
    assert new == old
    assert new == expected
    assert 0 < sum(new) < len(new)  # both kinds of row are there


@pytest.mark.parametrize(
    ("name", "rows", "message"),
    [
        # (id, usr_s, list items): the first refused row is named, whichever column holds the character
        ("in-text", [(b"A", b"ok", [b"a"]), (b"B", b"x\x7fy", [b"b"]), (b"C", b"\x01", [b"c"])], "row 2: key usr_s"),
        ("in-match-key", [(b"A", b"ok", [b"a"]), (b"B", b"ok", [b"b"]), (b"C\x00", b"ok", [b"c"])], "row 3"),
        ("in-list-item", [(b"A", b"ok", [b"a"]), (b"B", b"ok", [b"b", b"\x1fz"])], "row 2"),
        ("after-a-longer-char", [(b"A", "中\u2028文\x0b".encode(), [b"a"])], "row 1: key usr_s"),
        ("invalid-utf8", [(b"A", b"ok", [b"a"]), (b"B", b"caf\xe9", [b"b"])], None),
    ],
)
def test_a_refused_file_gets_duckdbs_message_on_both_engines(
    apps: Any,  # noqa: F811
    one_pass: list[str],  # noqa: F811
    tmp_path: Path,
    name: str,
    rows: list[tuple[bytes, bytes, list[bytes]]],
    message: str | None,
) -> None:
    path = tmp_path / f"{name}.parquet"
    offsets = pa.array([0, *itertools.accumulate(len(r[2]) for r in rows)], type=pa.int32())
    table = pa.table(
        {
            MATCH: _strings([r[0] for r in rows]),
            "usr_s": _strings([r[1] for r in rows]),
            "id_$anon": pa.ListArray.from_arrays(offsets, _strings([i for r in rows for i in r[2]])),
        }
    )
    pq.write_table(table, path)
    project = f"Chk{uuid.uuid4().hex[:5]}"
    seen = {engine: _outcome(app, project, tmp_path / engine, [path]) for engine, app in apps.items()}
    assert seen["clickhouse"] == seen["duckdb"]
    assert seen["duckdb"][0] == "refused"
    if message is not None:
        assert message in seen["duckdb"][1]
    assert one_pass == []  # the one pass found the row and handed the file over


def test_a_clean_file_still_loads_in_one_pass(apps: Any, one_pass: list[str], tmp_path: Path) -> None:  # noqa: F811
    """Tab, line breaks, U+0080-U+009F and longer characters are text, not control characters: kept."""
    select = (
        "SELECT * FROM (VALUES ('A', ['a' || chr(9) || 'b'], 'x' || chr(10) || chr(13) || chr(133) || chr(159) || "
        '\'中\' || chr(8232))) t("id_$basic_userId", "id_$anon", usr_s)'
    )
    path = _parquet(tmp_path, "clean", select)
    project = f"Chk{uuid.uuid4().hex[:5]}"
    seen = {engine: _outcome(app, project, tmp_path / engine, [path]) for engine, app in apps.items()}
    assert seen["clickhouse"] == seen["duckdb"]
    assert seen["duckdb"][0] == "stored"
    assert one_pass == ["clean.parquet"]
