"""Parquet event files (here on DuckDB, on ClickHouse in tests/test_event_import_parquet_clickhouse.py): rows are matched to their users whichever way the identity column is
written (padded with blanks, a number column, deviceId alone), each refusal names the same row and reason as
for any other file, and a refused file stores nothing. The DuckDB engine groups and joins such a file on its
one identity column as written (segport/engine/duckdb/events.py, ``Staged.raw_id``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from segport.errors import ImportRejected
from tests.conftest import PROJECT
from tests.test_event_import import T0, events

U = "$basic_userId"


def parquet(path: Path, select: str) -> Path:
    duckdb.sql(f"COPY ({select}) TO '{path}' (FORMAT PARQUET)")
    return path


def gio_of(seeded: Any, identity: str, value: str) -> str:
    entry = seeded.app.meta.catalog(PROJECT).get("id_" + identity)
    user = seeded.app.engine.lookup_user(PROJECT, seeded.app.meta.catalog(PROJECT), entry, value)
    return "0" if user is None else str(user["gio_id"])


def stored(seeded: Any, identity: str, value: str) -> list[tuple[str, int]]:
    page = events(seeded.app).user_events(PROJECT, identity, value, 0, 2 * T0, 100, 0, "asc")
    return sorted((r["event"], r["time"]) for r in page.rows)


def test_values_written_with_blanks_or_as_numbers_are_their_users(seeded: Any, tmp_path: Path) -> None:
    ev = events(seeded.app)
    c001 = gio_of(seeded, U, "C001")
    # ' C001 ' and 'C001' are the known user C001; ' N1', 'N1 ' and 'N1' one new user
    padded = parquet(
        tmp_path / "padded.parquet",
        f"SELECT * FROM (VALUES ('buy', {T0}, ' C001 '), ('buy', {T0 + 1000}, 'C001'), ('view', {T0 + 2000}, ' N1'), "
        f"('view', {T0 + 3000}, 'N1 '), ('view', {T0 + 4000}, 'N1')) t(event, time, userId)",
    )
    report = ev.import_events(PROJECT, padded)
    assert (report.stored, report.users_created) == (5, 1)
    assert stored(seeded, U, "C001") == [("buy", T0), ("buy", T0 + 1000)]
    assert stored(seeded, U, "N1") == [("view", T0 + 2000), ("view", T0 + 3000), ("view", T0 + 4000)]
    assert gio_of(seeded, U, "C001") == c001
    # a number column: 42 is the identity value '42', a new user, and the rows of the second file are its own
    numbers = parquet(
        tmp_path / "numbers.parquet",
        f"SELECT 'pay' AS event, {T0} + i * 1000 AS time, 42 + (i % 2)::BIGINT AS userId FROM range(4) r(i)",
    )
    report = ev.import_events(PROJECT, numbers)
    assert (report.stored, report.users_created) == (4, 2)
    again = ev.import_events(PROJECT, numbers)
    assert again.users_created == 0
    assert stored(seeded, U, "42") == [("pay", T0), ("pay", T0), ("pay", T0 + 2000), ("pay", T0 + 2000)]


def test_a_device_id_file_makes_one_user_per_device_numbered_in_row_order(seeded: Any, tmp_path: Path) -> None:
    ev = events(seeded.app)
    devices = parquet(
        tmp_path / "devices.parquet",
        f"SELECT 'open' AS event, {T0} + i AS time, 'd-' || (2 - i % 3) AS deviceId FROM range(6) r(i)",
    )
    report = ev.import_events(PROJECT, devices)
    assert (report.stored, report.users_created) == (6, 3)
    # new users are numbered in the order of the rows that first name them: d-2, d-1, d-0
    gios = [int(gio_of(seeded, "$anonymous_user", f"d-{n}")) for n in (2, 1, 0)]
    assert gios == sorted(gios) and gios[2] - gios[0] == 2
    assert stored(seeded, "$anonymous_user", "d-1") == [("open", T0 + 1), ("open", T0 + 4)]


@pytest.mark.parametrize(
    ("name", "select", "message"),
    [
        (
            "blank-id.parquet",
            f"SELECT * FROM (VALUES ('buy', {T0}, 'C001'), ('buy', {T0}, '  ')) t(event, time, userId)",
            "row 2: no identity",
        ),
        (
            "null-id.parquet",
            f"SELECT * FROM (VALUES ('buy', {T0}, 'C001'), ('buy', {T0}, NULL)) t(event, time, userId)",
            "row 2: no identity",
        ),
        (
            "control-id.parquet",
            f"SELECT * FROM (VALUES ('buy', {T0}, 'C001'), ('buy', {T0}, 'C' || chr(1))) t(event, time, userId)",
            "row 2: event, userId, userKey or deviceId holds a control character",
        ),
        (
            "old.parquet",
            f"SELECT * FROM (VALUES ('buy', {T0}, 'C001'), ('buy', 5, 'C001')) t(event, time, userId)",
            "row 2: time is before 2000-01-01",
        ),
        (
            "bad-int.parquet",
            f"SELECT * FROM (VALUES ('buy', {T0}, 'C001', 3::DOUBLE), ('buy', {T0}, 'C001', 3.5::DOUBLE)) t(event, time, userId, amount)",
            "row 2: attribute amount: value '3.5' is not a valid int",
        ),
        (
            "bad-name.parquet",
            f"SELECT * FROM (VALUES ('buy', {T0}, 'C001'), ('9x', {T0}, 'C001')) t(event, time, userId)",
            "row 2: event name '9x' is not valid",
        ),
        (
            # the first bad row is named whichever check sees it: the blank identity of row 2, not row 3's time
            "first.parquet",
            f"SELECT * FROM (VALUES ('buy', {T0}, 'C001'), ('buy', {T0}, ''), ('buy', 5, 'C001')) t(event, time, userId)",
            "row 2: no identity",
        ),
        (
            "device-blank.parquet",
            f"SELECT * FROM (VALUES ('open', {T0}, 'd-1'), ('open', {T0}, '')) t(event, time, deviceId)",
            "row 2: no identity",
        ),
        # a control character in a dictionary-encoded text column (a few values over many rows: its check runs
        # once per dictionary entry) is found as in any other column, DEL, NUL and the unit separator alike
        *(
            (
                f"dict-{code}.parquet",
                f"SELECT 'buy' AS event, {T0} AS time, 'C001' AS userId, CASE WHEN i = 699 THEN 'x' || chr({code}) "
                f"ELSE ['web', 'app', 'a' || chr(9) || 'b'][i % 3 + 1] END AS {column} FROM range(1000) r(i)",
                f"row 700: {label} holds a control character",
            )
            for code, column, label in (
                (127, "note", "attribute note"),
                (0, "note", "attribute note"),
                (31, '"$path"', "$path"),
            )
        ),
    ],
)
def test_a_bad_parquet_file_is_refused_whole_naming_its_row(
    seeded: Any, tmp_path: Path, name: str, select: str, message: str
) -> None:
    ev = events(seeded.app)
    ev.declare(PROJECT, "amount", "", "int")
    before = seeded.app.engine.count_events(PROJECT, 0, 2 * T0).events
    users_before = gio_of(seeded, U, "C001")
    with pytest.raises(ImportRejected) as err:
        ev.import_events(PROJECT, parquet(tmp_path / name, select))
    assert message in err.value.message and name in err.value.message, err.value.message
    assert seeded.app.engine.count_events(PROJECT, 0, 2 * T0).events == before
    assert gio_of(seeded, "$anonymous_user", "d-1") == "0" and gio_of(seeded, U, "C001") == users_before


def test_tabs_and_line_breaks_in_dictionary_encoded_text_are_stored(seeded: Any, tmp_path: Path) -> None:
    """Tab, line feed and carriage return are not control characters an import refuses (docs/limits.md), in a
    dictionary-encoded column too, where the check looks at them with a pattern that finds them first."""
    ev = events(seeded.app)
    file = parquet(
        tmp_path / "tabs.parquet",
        f"SELECT 'buy' AS event, {T0} + i AS time, 'C001' AS userId, ['a' || chr(9) || 'b', 'c' || chr(10) || 'd', "
        "'e' || chr(13) || 'f'][i % 3 + 1] AS note, 'p' || chr(9) AS \"$path\" FROM range(300) r(i)",
    )
    report = ev.import_events(PROJECT, file)
    assert report.stored == 300
    page = events(seeded.app).user_events(PROJECT, U, "C001", 0, 2 * T0, 300, 0, "asc")
    stored_values = {(r["attrs"].get("note"), r["std"].get("path")) for r in page.rows}
    assert stored_values == {("a\tb", "p\t"), ("c\nd", "p\t"), ("e\rf", "p\t")}, stored_values


@pytest.mark.parametrize("column", ["event", "userId", "note", "$path", "$type"])
def test_invalid_utf8_in_a_text_column_refuses_the_file(seeded: Any, tmp_path: Path, column: str) -> None:
    """Text DuckDB cannot read (invalid UTF-8) refuses the whole file with the reader's words, whichever column
    holds it: ``$type`` too, which the check pass reads as it reads every other column of the file."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    good = {"event": [b"buy", b"buy"], "userId": [b"C001", b"N7"], "note": [b"a", b"b"], "$path": [b"/", b"/"]}
    good["$type"] = [b"CUSTOM", b"CUSTOM"]
    good[column] = [good[column][0], good[column][1] + b"\xff"]
    texts = {k: pa.array(v, pa.binary()).view(pa.string()) for k, v in good.items()}  # (the bytes as they are)
    path = tmp_path / "utf8.parquet"
    pq.write_table(pa.table({"time": pa.array([T0, T0 + 1], pa.int64()), **texts}), path)
    before = seeded.app.engine.count_events(PROJECT, 0, 2 * T0).events
    with pytest.raises(ImportRejected) as err:
        events(seeded.app).import_events(PROJECT, path)
    assert err.value.message.startswith("cannot read utf8.parquet as parquet:"), err.value.message
    assert "not valid UTF8" in err.value.message, err.value.message
    assert seeded.app.engine.count_events(PROJECT, 0, 2 * T0).events == before
    assert gio_of(seeded, U, "N7") == "0"


def test_a_file_with_several_identity_columns_and_attributes_resolves_each_row(seeded: Any, tmp_path: Path) -> None:
    # userId and deviceId (and an attribute): matched on the identity of each row, not on one column as written
    ev = events(seeded.app)
    both = parquet(
        tmp_path / "both.parquet",
        f"SELECT * FROM (VALUES ('buy', {T0}, 'C001', NULL, 5), ('open', {T0 + 1}, NULL, 'd-9', 6), "
        f"('open', {T0 + 2}, NULL, ' d-9 ', 7)) t(event, time, userId, deviceId, n)",
    )
    report = ev.import_events(PROJECT, both)
    assert (report.stored, report.users_created) == (3, 1)
    assert stored(seeded, U, "C001") == [("buy", T0)]
    assert stored(seeded, "$anonymous_user", "d-9") == [("open", T0 + 1), ("open", T0 + 2)]
    # a gio_id column and an attribute: the rows are those users'
    gio = gio_of(seeded, U, "C001")
    given = parquet(
        tmp_path / "gio.parquet", f"SELECT 'pay' AS event, {T0 + 5} AS time, {gio}::BIGINT AS gio_id, 1 AS n"
    )
    assert ev.import_events(PROJECT, given).stored == 1
    assert stored(seeded, U, "C001") == [("buy", T0), ("pay", T0 + 5)]
