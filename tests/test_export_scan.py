"""The export's one-scan path (DuckDB): a rule segment whose membership is current, or a tag, is written by one
``COPY`` of the users table with the rule as its filter and no sort (export_sql.scan_query), byte for byte what
the join of the membership with the users table, sorted by ``gio_id``, writes; and never when that would differ:
a membership older than the data, or a users table no longer in ``gio_id`` order."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path
from typing import Any

import pytest

from segport.app import App
from segport.domain.export import Compression, ExportSpec, FileFormat, HeaderType, columns_of
from segport.engine.base import Target
from segport.engine.duckdb import engine as duckdb_engine
from segport.engine.duckdb.export_sql import export_query
from segport.services.data import SegmentSpec
from tests.conftest import COLUMNS, PROJECT, SEGMENT, USERS, Seeded, write_users_csv

KEYS = ["id_$basic_userId", "usr_gender", "usr_city", "id_$anonymous_user", "usr_age", "usr_score", "usr_since"]


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What every export's ``scan_query`` answered (None: the export joined and sorted)."""
    seen: list[Any] = []
    real = duckdb_engine.scan_query

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(duckdb_engine, "scan_query", spy)
    return seen


def export(app: App, tmp_path: Path, spec: ExportSpec, *, one_scan: bool, target: Target | None = None) -> bytes:
    app.engine.one_scan = one_scan  # type: ignore[attr-defined]
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    output = app.engine.export(
        PROJECT,
        target or Target("segment", SEGMENT),
        columns_of(spec, app.meta.catalog(PROJECT)),
        spec,
        out,
        lambda parts: [f"f{i}.{spec.extension}" for i in range(parts)],
    )
    [path] = output.files
    data = path.read_bytes()
    return gzip.decompress(data) if spec.compression is Compression.GZIP else data


def duckdb_of(app: App) -> Any:
    """The DuckDB connection under the app's engine (admitted into the memory budget, or not)."""
    return getattr(app.engine, "engine", app.engine)._con


def ordered(app: App) -> bool:
    con = duckdb_of(app)
    row = con.execute(f"SELECT min(gio_id - rowid) = max(gio_id - rowid) FROM users_{PROJECT}").fetchone()
    return bool(row[0])


@pytest.mark.parametrize(
    "spec",
    [
        ExportSpec(properties=tuple(KEYS)),
        ExportSpec(properties=tuple(KEYS), header=HeaderType.NAME),
        ExportSpec(properties=tuple(KEYS), file_format=FileFormat.JSON),
        ExportSpec(properties=tuple(KEYS), compression=Compression.GZIP),
        ExportSpec(properties=()),
    ],
    ids=["csv-key", "csv-name", "json", "gzip", "no-properties"],
)
def test_a_current_rule_segment_is_one_scan_with_the_joined_bytes(
    seeded: Seeded, tmp_path: Path, scans: list[Any], spec: ExportSpec
) -> None:
    one = export(seeded.app, tmp_path, spec, one_scan=True)
    assert scans and scans[-1] is not None and "JOIN" not in scans[-1][0] and "ORDER BY" not in scans[-1][0]
    assert one == export(seeded.app, tmp_path, spec, one_scan=False)
    assert b"C006" not in one and (not spec.properties or b"C007" in one)  # everyone but C006


def test_a_tag_is_one_scan_with_the_sorted_bytes(seeded: Seeded, tmp_path: Path, scans: list[Any]) -> None:
    spec, tag = ExportSpec(properties=tuple(KEYS)), Target("tag", "tag_rfm")
    one = export(seeded.app, tmp_path, spec, one_scan=True, target=tag)
    assert scans[-1] is not None
    assert one == export(seeded.app, tmp_path, spec, one_scan=False, target=tag)


def test_a_membership_older_than_the_data_is_read_not_the_rule(
    seeded: Seeded, tmp_path: Path, scans: list[Any]
) -> None:
    """An import that does not recompute the segment: the export is still the membership's snapshot. The ages of
    C001 and C006 change places, so the rule would pick as many users, but not the same ones."""
    app = seeded.app
    spec = ExportSpec(properties=("id_$basic_userId", "usr_age"))
    before = export(app, tmp_path, spec, one_scan=False)
    swapped = [dict(u, usr_age="60") if u["id_$basic_userId"] == "C001" else u for u in USERS]
    swapped = [dict(u, usr_age="20") if u["id_$basic_userId"] == "C006" else u for u in swapped]
    path = write_users_csv(tmp_path / "swap.csv", swapped)
    app.engine.import_users(PROJECT, app.meta.catalog(PROJECT), path, "csv", "id_$basic_userId", [])
    after = export(app, tmp_path, spec, one_scan=True)
    assert scans[-1] is None
    assert b'"C001","60"' in after and b'"C006"' not in after  # the members of the snapshot, their new values
    assert after.replace(b'"C001","60"', b'"C001","30"') == before


def test_a_users_table_out_of_gio_id_order_is_sorted(seeded: Seeded, tmp_path: Path, scans: list[Any]) -> None:
    """An update of a multi-valued key rewrites the user's row at the end of the table: the table's order is no
    longer ``gio_id`` order, and the export sorts again."""
    app = seeded.app
    spec = ExportSpec(properties=tuple(KEYS))
    changed = [dict(USERS[0], **{"id_$anonymous_user": "d9"}), *USERS[1:]]
    path = write_users_csv(tmp_path / "update.csv", changed[:1], COLUMNS)
    app.data.import_users(PROJECT, path)
    app.data.recompute_segment(PROJECT, SEGMENT)  # the membership is current again
    assert not ordered(app)
    one = export(app, tmp_path, spec, one_scan=True)
    assert scans[-1] is None
    assert one == export(app, tmp_path, spec, one_scan=False)
    assert one.index(b'"C001"') < one.index(b'"C002"') and b"d9" in one


def test_a_deleted_segment_forgets_its_rule_and_a_new_one_keeps_its_own(
    seeded: Seeded, tmp_path: Path, scans: list[Any]
) -> None:
    app = seeded.app
    con = duckdb_of(app)
    assert (
        con.execute(
            "SELECT count(*) FROM segport_segment_rules WHERE project = ? AND segment = ?", [PROJECT, SEGMENT]
        ).fetchone()[0]
        == 1
    )
    app.data.delete_segment(PROJECT, SEGMENT)
    assert (
        con.execute(
            "SELECT count(*) FROM segport_segment_rules WHERE project = ? AND segment = ?", [PROJECT, SEGMENT]
        ).fetchone()[0]
        == 0
    )
    app.data.create_segment(
        PROJECT, SegmentSpec(key=SEGMENT, name="按名单", rule={"key": "usr_age", "op": "lte", "value": 30})
    )
    rows = con.execute(
        "SELECT data_version FROM segport_segment_rules WHERE project = ? AND segment = ?", [PROJECT, SEGMENT]
    ).fetchall()
    assert rows == [(app.engine.data_version(PROJECT),)]
    export(app, tmp_path, ExportSpec(properties=("usr_age",)), one_scan=True)
    assert scans[-1] is not None


def test_the_bench_statement_is_the_scan_with_its_parameters_written_in(seeded: Seeded, tmp_path: Path) -> None:
    """export_query (what bench/export_bench.py has DuckDB write alone) is the statement the engine runs."""
    app = seeded.app
    spec = ExportSpec(properties=tuple(KEYS), header=HeaderType.NAME)
    con = duckdb_of(app).cursor()
    query, options = export_query(
        con, PROJECT, Target("segment", SEGMENT), columns_of(spec, app.meta.catalog(PROJECT)), spec
    )
    assert "JOIN" not in query and "?" not in query.split(" WHERE ", 1)[1]
    con.execute(f"COPY ({query}) TO '{tmp_path / 'bench.csv'}' ({options})")
    assert (tmp_path / "bench.csv").read_bytes() == export(app, tmp_path, spec, one_scan=True)


def test_an_import_committing_after_the_check_does_not_reach_the_scan(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check and the COPY are one read transaction: an import that commits between them (and even makes the
    rule current again by recomputing) changes neither the file nor the data version reported."""
    app = seeded.app
    spec = ExportSpec(properties=("id_$basic_userId", "usr_city"))
    before = export(app, tmp_path, spec, one_scan=False)
    version = app.engine.data_version(PROJECT)
    checked, imported = threading.Event(), threading.Event()
    done: dict[str, Any] = {}
    real = duckdb_engine.scan_query

    def check_then_hold(*args: Any, **kwargs: Any) -> Any:
        found = done["scan"] = real(*args, **kwargs)
        checked.set()
        assert imported.wait(60), "the import did not commit"
        return found

    monkeypatch.setattr(duckdb_engine, "scan_query", check_then_hold)
    out = tmp_path / "held"
    out.mkdir()
    app.engine.one_scan = True  # type: ignore[attr-defined]

    def run() -> None:
        done["output"] = app.engine.export(
            PROJECT,
            Target("segment", SEGMENT),
            columns_of(spec, app.meta.catalog(PROJECT)),
            spec,
            out,
            lambda parts: [f"f{i}.csv" for i in range(parts)],
        )

    exporter = threading.Thread(target=run)
    exporter.start()
    try:
        assert checked.wait(60), "the export did not start"
        changed = [dict(u, usr_city="改了") if u["id_$basic_userId"] == "C001" else u for u in USERS]
        app.data.import_users(PROJECT, write_users_csv(tmp_path / "change.csv", changed))
        app.data.recompute_segment(PROJECT, SEGMENT)
    finally:
        imported.set()
    exporter.join(60)
    assert done["scan"] is not None  # the one-scan path, not the join
    assert app.engine.data_version(PROJECT) > version
    assert done["output"].data_version == version
    assert done["output"].files[0].read_bytes() == before
