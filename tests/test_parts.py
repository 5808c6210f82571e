"""`max_file_rows`: an export split into parts, each with its header, named `_1`, `_2`… and listed in order."""

from __future__ import annotations

import gzip
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.domain.export import Compression, ExportSpec, FileFormat, HeaderType, columns_of
from segport.domain.naming import result_file_names
from segport.engine.base import Target
from segport.services.data import SegmentSpec
from segport.worker import Worker
from tests.conftest import PROJECT, SEGMENT, Seeded, auth
from tests.expected import expected_csv, expected_jsonl, parse_jsonl

EXPORT = f"/v1/api/projects/{PROJECT}/segment_profiles/{{segment}}/export_jobs"
KEYS = [
    "id_$basic_userId",
    "usr_gender",
    "usr_city",
    "id_$anonymous_user",
    "usr_age",
    "usr_score",
    "usr_since",
    "tag_rfm",
]
MEMBERS = 6  # the seeded segment: everyone but C006


def engine_export(app: App, tmp_path: Path, spec: ExportSpec, max_file_rows: int, segment: str = SEGMENT) -> list[Path]:
    """The engine's own output for ``spec``, in a fresh folder: the list of files it wrote, in order."""
    out = tmp_path / f"out-{max_file_rows}-{spec.extension}-{segment}"
    out.mkdir()
    columns = columns_of(spec, app.meta.catalog(PROJECT))
    output = app.engine.export(
        PROJECT,
        Target("segment", segment),
        columns,
        spec,
        out,
        lambda parts: result_file_names("名单", "2026-01-01", spec.extension, parts),
        max_file_rows=max_file_rows,
    )
    return output.files


def joined_without_repeated_headers(files: list[Path]) -> bytes:
    first = files[0].read_bytes()
    header = first[: first.index(b"\n") + 1]  # a header never holds a newline, values may
    rest = []
    for f in files[1:]:
        data = f.read_bytes()
        assert data.startswith(header), f"{f.name} does not start with the header"
        rest.append(data[len(header) :])
    return first + b"".join(rest)


@pytest.mark.parametrize("header", [HeaderType.KEY, HeaderType.NAME])
def test_csv_parts_concatenate_to_the_single_file_byte_exact(
    seeded: Seeded, tmp_path: Path, header: HeaderType
) -> None:
    spec = ExportSpec(properties=tuple(KEYS), header=header)
    [single] = engine_export(seeded.app, tmp_path, spec, 0)
    parts = engine_export(seeded.app, tmp_path, spec, 4)
    assert [p.name for p in parts] == ["名单_2026-01-01_UserList_1.csv", "名单_2026-01-01_UserList_2.csv"]
    assert joined_without_repeated_headers(parts) == single.read_bytes()
    if header is HeaderType.KEY:
        assert single.read_bytes() == expected_csv(KEYS)


@pytest.mark.parametrize("max_rows", [1, 2, 3, 5])
def test_every_part_holds_at_most_max_file_rows_and_only_the_last_fewer(
    seeded: Seeded, tmp_path: Path, max_rows: int
) -> None:
    spec = ExportSpec(properties=tuple(KEYS), file_format=FileFormat.JSON)
    parts = engine_export(seeded.app, tmp_path, spec, max_rows)
    sizes = [len(parse_jsonl(p.read_bytes())) for p in parts]
    assert len(parts) == -(-MEMBERS // max_rows)
    assert all(n == max_rows for n in sizes[:-1]) and 0 < sizes[-1] <= max_rows
    assert sum(sizes) == MEMBERS


def test_json_parts_concatenate_to_the_single_file(seeded: Seeded, tmp_path: Path) -> None:
    spec = ExportSpec(properties=tuple(KEYS), file_format=FileFormat.JSON)
    [single] = engine_export(seeded.app, tmp_path, spec, 0)
    parts = engine_export(seeded.app, tmp_path, spec, 4)
    assert [p.name for p in parts] == ["名单_2026-01-01_UserList_1.json", "名单_2026-01-01_UserList_2.json"]
    assert b"".join(p.read_bytes() for p in parts) == single.read_bytes()
    assert parse_jsonl(single.read_bytes()) == expected_jsonl(KEYS)


def test_export_that_fits_in_one_part_keeps_the_plain_name(seeded: Seeded, tmp_path: Path) -> None:
    spec = ExportSpec(properties=tuple(KEYS))
    [exact] = engine_export(seeded.app, tmp_path, spec, MEMBERS)
    [single] = engine_export(seeded.app, tmp_path, spec, 0)
    assert exact.name == "名单_2026-01-01_UserList.csv"
    assert exact.read_bytes() == single.read_bytes()


def test_empty_segment_with_parts_is_one_file_with_only_the_header(seeded: Seeded, tmp_path: Path) -> None:
    seeded.app.data.create_segment(
        PROJECT, SegmentSpec(key="seg_nobody", name="无人", rule={"key": "usr_age", "op": "gt", "value": 1000})
    )
    [only] = engine_export(seeded.app, tmp_path, ExportSpec(properties=("usr_gender",)), 2, segment="seg_nobody")
    assert only.read_bytes() == b'"gio_id","usr_gender"\n'


def test_job_result_lists_the_parts_in_order_and_each_downloads(
    client: TestClient, worker: Worker, seeded: Seeded
) -> None:
    seeded.app.settings.max_file_rows = 2
    created = client.post(EXPORT.format(segment=SEGMENT), headers=auth(seeded.token), json={"properties": KEYS})
    assert created.status_code == 200, created.text
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{created.json()['id']}", headers=auth(seeded.token)).json()
    assert result["stage"] == "FINISH", result
    assert result["rows"] == MEMBERS
    names = [unquote(u).rsplit("/", 1)[1] for u in result["uris"]]
    assert [n.rsplit("_", 1)[1] for n in names] == ["1.csv", "2.csv", "3.csv"]
    assert all(n.endswith(f"_UserList_{i}.csv") for i, n in enumerate(names, 1))
    bodies = []
    for uri in result["uris"]:
        got = client.get("/download?file=" + uri, headers=auth(seeded.token))
        assert got.status_code == 200, got.text
        bodies.append(got.content)
    header = bodies[0].split(b"\n", 1)[0] + b"\n"
    assert bodies[0] + b"".join(b[len(header) :] for b in bodies[1:]) == expected_csv(KEYS)


# --- chunks: a large export is written as several COPYs streamed into one file ---------------------------
@pytest.mark.parametrize(
    "spec",
    [
        ExportSpec(properties=tuple(KEYS)),
        ExportSpec(properties=tuple(KEYS), header=HeaderType.NAME),
        ExportSpec(properties=tuple(KEYS), file_format=FileFormat.JSON),
        ExportSpec(properties=()),
    ],
    ids=["csv-key", "csv-name", "json", "no-properties"],
)
def test_chunked_export_is_byte_identical_to_one_copy(seeded: Seeded, tmp_path: Path, spec: ExportSpec) -> None:
    [whole] = engine_export(seeded.app, tmp_path, spec, 0)
    seeded.app.engine.chunk_rows = 2  # type: ignore[attr-defined]
    seeded.app.engine.one_scan = False  # type: ignore[attr-defined]  # the chunked writer, not one scan
    out = tmp_path / "chunked"
    out.mkdir()
    columns = columns_of(spec, seeded.app.meta.catalog(PROJECT))
    output = seeded.app.engine.export(
        PROJECT,
        Target("segment", SEGMENT),
        columns,
        spec,
        out,
        lambda parts: result_file_names("名单", "2026-01-01", spec.extension, parts),
    )
    assert output.rows == MEMBERS
    assert [p.name for p in output.files] == [whole.name]
    assert output.files[0].read_bytes() == whole.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [whole.name]  # no FIFO left behind


def test_parts_made_of_several_chunks_keep_one_header_each(seeded: Seeded, tmp_path: Path) -> None:
    spec = ExportSpec(properties=tuple(KEYS))
    [whole] = engine_export(seeded.app, tmp_path, spec, 0)
    seeded.app.engine.chunk_rows = 3  # type: ignore[attr-defined]
    seeded.app.engine.one_scan = False  # type: ignore[attr-defined]  # the chunked writer, not one scan
    parts = engine_export(seeded.app, tmp_path, spec, 4)  # part 1 = chunks of 3 + 1 rows, part 2 = 2 rows
    assert [p.name for p in parts] == ["名单_2026-01-01_UserList_1.csv", "名单_2026-01-01_UserList_2.csv"]
    assert [len(p.read_bytes().split(b'\n"')) - 1 for p in parts] == [4, 2]
    assert joined_without_repeated_headers(parts) == whole.read_bytes()


def test_chunked_gzip_export_decompresses_to_the_plain_bytes(seeded: Seeded, tmp_path: Path) -> None:
    plain = ExportSpec(properties=tuple(KEYS))
    [whole] = engine_export(seeded.app, tmp_path, plain, 0)
    seeded.app.engine.chunk_rows = 2  # type: ignore[attr-defined]
    seeded.app.engine.one_scan = False  # type: ignore[attr-defined]  # the chunked writer, not one scan
    zipped = ExportSpec(properties=tuple(KEYS), compression=Compression.GZIP)
    [gz] = engine_export(seeded.app, tmp_path, zipped, 0)
    assert gz.name.endswith("_UserList.csv.gz")
    assert gzip.decompress(gz.read_bytes()) == whole.read_bytes()
