"""The Python client against a real segport app in-process (starlette's transport, export workers running)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

import segport.client as client_pkg
from segport.client import AsyncClient, Client, ClientError, Job, Progress
from segport.roles.inline import create_app
from tests.client_support import InProcess
from tests.conftest import PROJECT, SEGMENT, SEGMENT_NAME, Seeded
from tests.expected import expected_csv, expected_jsonl, parse_jsonl

KEYS = ["id_$basic_userId", "usr_gender", "tag_rfm", "usr_city"]


@pytest.fixture
def served(seeded: Seeded) -> Iterator[InProcess]:
    with TestClient(create_app(seeded.app, run_workers=True)) as tc:
        yield InProcess(tc, seeded.token)


def test_export_segment_csv_writes_the_servers_file(served: InProcess, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    with served.client() as client:
        paths = client.export_segment(PROJECT, SEGMENT, KEYS, dest=tmp_path, timeout=30)
    assert len(paths) == 1
    assert paths[0].parent == tmp_path
    assert paths[0].name.startswith(f"{SEGMENT_NAME}_") and paths[0].name.endswith("_UserList.csv")
    assert paths[0].read_bytes() == expected_csv(KEYS)
    assert [p.name for p in tmp_path.iterdir()] == [paths[0].name]  # no .part file left behind


def test_export_segment_json_lines(served: InProcess, tmp_path: Path) -> None:
    with served.client() as client:
        (path,) = client.export_segment(
            PROJECT, SEGMENT, KEYS, file_format="json", dest=tmp_path / "x.json", timeout=30
        )
    assert path == tmp_path / "x.json"
    assert parse_jsonl(path.read_bytes()) == expected_jsonl(KEYS)


def test_export_segment_with_display_name_header(served: InProcess, tmp_path: Path) -> None:
    with served.client() as client:
        (path,) = client.export_segment(PROJECT, SEGMENT, KEYS, header="name", dest=tmp_path / "n.csv", timeout=30)
    assert path.read_bytes() == expected_csv(KEYS, header=["用户ID", "性别", "会员等级", "城市"])


def test_submit_wait_download_step_by_step(served: InProcess, tmp_path: Path) -> None:
    with served.client() as client:
        job = client.submit_segment_export(PROJECT, SEGMENT, ["ids_$basic_userId", "usr_gender"])
        assert isinstance(job, Job) and len(job.id) == 8 and job.name.startswith("DES-")
        result = client.wait(job, timeout=30)
        assert result.stage == "FINISH" and result.finished and not result.failed
        assert result.id == job.id and result.name == job.name
        (uri,) = result.uris
        assert unquote(uri).startswith(f"/jobs/results/{job.name}/")
        path = client.download(uri, tmp_path)
        again = client.job_result(job.id)
    content = path.read_bytes()
    assert content == expected_csv(["id_$basic_userId", "usr_gender"])
    # segport's extras arrive typed
    assert result.rows == len(content.splitlines()) - 1
    assert result.bytes == len(content)
    assert result.expires_at is not None and result.finished_at is not None
    assert result.expires_at > result.finished_at
    assert again.uris == result.uris


def test_progress_reports_stage_rows_and_bytes(served: InProcess, tmp_path: Path) -> None:
    events: list[Progress] = []
    with served.client() as client:
        (path,) = client.export_segment(PROJECT, SEGMENT, KEYS, dest=tmp_path, timeout=30, progress=events.append)
    phases = [e.phase for e in events]
    assert phases[0] == "submitted" and phases[-1] == "done"
    assert phases.index("downloading") > phases.index("waiting")
    finish = [e for e in events if e.phase == "waiting" and e.stage == "FINISH"]
    assert finish and finish[-1].rows == 6
    downloads = [e for e in events if e.phase == "downloading"]
    assert downloads[-1].downloaded == downloads[-1].total == path.stat().st_size
    assert all(a.elapsed_s <= b.elapsed_s for a, b in zip(events, events[1:], strict=False))


def test_identical_exports_share_one_job(served: InProcess, tmp_path: Path) -> None:
    with served.client() as client:
        first = client.submit_segment_export(PROJECT, SEGMENT, KEYS)
        client.wait(first, timeout=30)
        second = client.submit_segment_export(PROJECT, SEGMENT, KEYS)
    assert second == first  # segport dedupes: the same request while the result is kept is the same job


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("kind", ["polars", "pandas"])
def test_as_frame_keeps_every_value_as_the_file_has_it_and_missing_values_null(
    served: InProcess, tmp_path: Path, kind: str, fmt: str
) -> None:
    lib = pytest.importorskip(kind)
    with served.client() as client:
        frame = client.export_segment(
            PROJECT,
            SEGMENT,
            KEYS,
            file_format=fmt,
            dest=tmp_path,
            timeout=30,
            as_frame=kind,  # type: ignore[arg-type]
        )
    assert isinstance(frame, lib.DataFrame)
    rows = expected_jsonl(KEYS)
    expected = {"gio_id": [r["gio_id"] for r in rows]}
    expected |= {key: [{**r["identifications"], **r["properties"]}[key] for r in rows] for key in KEYS}
    if kind == "pandas" and fmt == "csv":  # pandas reads an empty CSV string "" as missing (see docs/client.md)
        expected["usr_gender"] = [value or None for value in expected["usr_gender"]]
    # every column in order, every value a string as written ("" stays "", but see above), missing ones null
    assert list(_columns(frame, kind).items()) == list(expected.items())


def _columns(frame: Any, kind: str) -> dict[str, list[str | None]]:
    """A polars or pandas DataFrame as ``{column: values}``, a missing value as None."""
    if kind == "polars":
        return frame.to_dict(as_series=False)
    return {c: [None if missing else v for v, missing in zip(frame[c], frame[c].isna(), strict=True)] for c in frame}


def test_dunder_all_is_honest() -> None:
    exported = set(client_pkg.__all__)
    assert len(exported) == len(client_pkg.__all__)
    assert client_pkg.__all__ == sorted(client_pkg.__all__)
    for name in exported:
        assert getattr(client_pkg, name) is not None, name
    # every public class the package defines (the client modules, not the CLI) is exported, and every error
    modules = ["errors", "models", "sync", "aio"]
    public = {
        name
        for mod in modules
        for name, obj in inspect.getmembers(getattr(client_pkg, mod), inspect.isclass)
        if obj.__module__ == f"segport.client.{mod}" and not name.startswith("_")
    }
    assert public == exported
    errors = {c.__name__ for c in _subclasses(ClientError)}
    assert errors <= exported


def test_sync_and_async_clients_have_the_same_methods() -> None:
    def api(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(fn).parameters)
            for name, fn in vars(cls).items()
            if callable(fn) and not name.startswith("_") and name not in ("close", "aclose")
        }

    assert api(Client) == api(AsyncClient)
    assert {
        "submit_segment_export",
        "submit_tag_export",
        "job_result",
        "wait",
        "download",
        "export_segment",
        "export_tag",
    } <= set(api(Client))
    for name in api(Client):
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out
