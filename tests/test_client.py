"""The Python client against a real segport app in-process (starlette's transport, export workers running)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

import segport.client as client_pkg
from segport.client import AsyncClient, Client, ClientError, Job, Progress
from segport.http.server import create_app
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
def test_as_frame_polars(served: InProcess, tmp_path: Path, fmt: str) -> None:
    pl = pytest.importorskip("polars")
    with served.client() as client:
        frame = client.export_segment(
            PROJECT, SEGMENT, KEYS, file_format=fmt, dest=tmp_path, timeout=30, as_frame="polars"
        )
    assert isinstance(frame, pl.DataFrame)
    assert frame.columns == ["gio_id", *KEYS]
    rows = expected_jsonl(KEYS)
    assert frame["gio_id"].to_list() == [r["gio_id"] for r in rows]
    assert frame["usr_city"].to_list() == [r["properties"]["usr_city"] for r in rows]
    assert frame["usr_gender"].to_list() == [r["properties"]["usr_gender"] for r in rows]  # "" stays "", None null
    assert frame["tag_rfm"].null_count() == sum(r["properties"]["tag_rfm"] is None for r in rows)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_as_frame_pandas(served: InProcess, tmp_path: Path, fmt: str) -> None:
    pd = pytest.importorskip("pandas")
    with served.client() as client:
        frame = client.export_segment(
            PROJECT, SEGMENT, KEYS, file_format=fmt, dest=tmp_path, timeout=30, as_frame="pandas"
        )
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["gio_id", *KEYS]
    rows = expected_jsonl(KEYS)
    assert frame["id_$basic_userId"].tolist() == [r["identifications"]["id_$basic_userId"] for r in rows]
    assert int(frame["tag_rfm"].isna().sum()) == sum(r["properties"]["tag_rfm"] is None for r in rows)


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
