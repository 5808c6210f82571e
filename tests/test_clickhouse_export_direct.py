"""On chdb the result file is written by ClickHouse itself (INSERT INTO FUNCTION file), in gio_id ranges of
``CHUNK_ROWS`` appended one after another (segport/engine/clickhouse/writer.py). The file is the streamed
one byte for byte however it is cut, a cancel is seen between two ranges and leaves no file behind, and a
result folder ClickHouse would read as a glob, or a gzip file, still takes the streamed path."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import pytest

from segport.domain.export import Compression, ExportSpec, FileFormat
from segport.domain.keys import Catalog, CatalogEntry, KeyKind, ValueType
from segport.engine.base import SegmentDefinition, Target
from segport.engine.clickhouse import writer
from segport.engine.clickhouse.engine import ClickHouseEngine
from segport.engine.interrupt import Interrupt
from segport.errors import ExportFailed

PROJECT = "Chunks01"
USERS = 1_000


@pytest.fixture(scope="module")
def engine(chdb_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("direct")
    eng = ClickHouseEngine(f"chdb://{chdb_dir}?database=d_{uuid.uuid4().hex[:12]}", scratch=tmp / "scratch")
    catalog = Catalog(
        [
            CatalogEntry("id_$basic_userId", KeyKind.IDENTITY, "用户"),
            CatalogEntry("usr_s", KeyKind.PROPERTY, "文本"),
            CatalogEntry("usr_n", KeyKind.PROPERTY, "数字", ValueType.INT),
        ]
    )
    eng.ensure_project(PROJECT, catalog)
    users = tmp / "users.csv"
    lines = ["id_$basic_userId,usr_s,usr_n"]
    for i in range(USERS):  # quotes, commas, a line separator now and then
        lines.append(f'U{i:05d},"v ""{i}"", x{chr(0x2028) if i % 97 == 0 else ""}",{i}')
    users.write_text("\n".join(lines) + "\n", encoding="utf-8")
    eng.import_users(PROJECT, catalog, users, "csv", "id_$basic_userId", [])
    rule = {"key": "usr_n", "op": "gte", "value": 100}
    eng.compute_segment(PROJECT, SegmentDefinition("half", rule_tree=rule, catalog=catalog))
    eng.catalog = catalog
    yield eng
    eng.close()


def _export(eng: Any, out: Path, spec: ExportSpec, **kw: Any) -> tuple[int, list[bytes]]:
    out.mkdir(parents=True, exist_ok=True)
    entries = list(eng.catalog.entries.values())
    names = lambda n: [f"r_{i}.{spec.extension}" for i in range(n)]  # noqa: E731
    result = eng.export(PROJECT, Target("segment", "half"), entries, spec, out, names, **kw)
    return result.rows, [p.read_bytes() for p in result.files]


@pytest.mark.parametrize("fmt", [FileFormat.CSV, FileFormat.JSON])
@pytest.mark.parametrize("parts", [0, 300])
def test_ranges_make_the_streamed_file_byte_for_byte(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: FileFormat, parts: int
) -> None:
    spec = ExportSpec(file_format=fmt)
    engine.local_files = False  # the stream, as for a ClickHouse server
    streamed = _export(engine, tmp_path / "stream", spec, max_file_rows=parts)
    engine.local_files = True
    whole = _export(engine, tmp_path / "whole", spec, max_file_rows=parts)
    monkeypatch.setattr(writer, "CHUNK_ROWS", 70)  # ~13 ranges, some of them short
    cut = _export(engine, tmp_path / "cut", spec, max_file_rows=parts)
    assert streamed[0] == 900
    assert streamed == whole == cut
    if fmt is FileFormat.JSON:
        assert "\u2028".encode() in b"".join(cut[1]) and b"\\u2028" not in b"".join(cut[1])
    assert not list((tmp_path / "cut").glob(".clickhouse-*"))


def test_a_cancel_between_two_ranges_stops_the_export(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "CHUNK_ROWS", 100)
    interrupt = Interrupt()
    calls: list[str] = []
    client = engine.client()
    command = client.command

    def counted(sql: str, *args: Any, **kwargs: Any) -> Any:
        out = command(sql, *args, **kwargs)
        if sql.startswith("INSERT INTO FUNCTION file"):
            calls.append(sql)
            if len(calls) == 3:
                interrupt.fire("cancelled")
        return out

    monkeypatch.setattr(client, "command", counted)
    with pytest.raises(ExportFailed, match="interrupted"):
        _export(engine, tmp_path / "out", ExportSpec(), interrupt=interrupt)
    assert len(calls) == 3  # of 9 ranges
    assert list((tmp_path / "out").iterdir()) == []  # no part file, no result


def test_a_glob_folder_and_gzip_take_the_stream(engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("ClickHouse was asked to write the file itself")

    plain = _export(engine, tmp_path / "plain", ExportSpec())
    monkeypatch.setattr(writer, "_write_here", refuse)
    assert _export(engine, tmp_path / "glob{a,b}*", ExportSpec()) == plain
    rows, files = _export(engine, tmp_path / "gz", ExportSpec(compression=Compression.GZIP))

    assert (rows, [gzip.decompress(f) for f in files]) == plain
