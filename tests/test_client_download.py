"""Downloads cut mid-stream resume with Range and end in identical bytes: through a transport that drops the
body in-process, and through a loopback proxy that drops a real socket in front of a real `segport serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from segport.client import Client, DownloadFailed
from segport.roles.inline import build, create_app
from segport.settings import Settings
from tests.client_support import BASE, FAST, CutDownloads, DroppingProxy, InProcess
from tests.conftest import PROJECT, SEGMENT, Seeded, seed_project, start_server, stop_server
from tests.expected import expected_csv, expected_jsonl, parse_jsonl

KEYS = ["id_$basic_userId", "usr_gender", "tag_rfm", "usr_city", "usr_age"]


@pytest.fixture
def served(seeded: Seeded) -> Iterator[InProcess]:
    with TestClient(create_app(seeded.app, run_workers=True)) as tc:
        yield InProcess(tc, seeded.token)


def export_through(transport: CutDownloads, token: str, dest: Path, **kwargs: object) -> Path:
    with Client(BASE, token, transport=transport, backoff=FAST, **kwargs) as client:  # type: ignore[arg-type]
        (path,) = client.export_segment(PROJECT, SEGMENT, KEYS, dest=dest, timeout=30)
    return path


def test_download_cut_mid_stream_resumes_with_range(served: InProcess, tmp_path: Path) -> None:
    cut = CutDownloads(served.transport, after=50)
    path = export_through(cut, served.token, tmp_path / "out.csv")
    assert path.read_bytes() == expected_csv(KEYS)
    assert cut.ranges == [None, "bytes=50-"]


def test_download_cut_three_times_resumes_each_time(served: InProcess, tmp_path: Path) -> None:
    cut = CutDownloads(served.transport, after=40, cuts=3)
    path = export_through(cut, served.token, tmp_path / "out.csv")
    assert path.read_bytes() == expected_csv(KEYS)
    assert cut.ranges == [None, "bytes=40-", "bytes=80-", "bytes=120-"]


def test_download_restarts_when_the_server_ignores_range(served: InProcess, tmp_path: Path) -> None:
    cut = CutDownloads(served.transport, after=50, ignore_range=True)
    path = export_through(cut, served.token, tmp_path / "out.csv")
    assert path.read_bytes() == expected_csv(KEYS)  # the 200 answer replaced the partial file, not appended
    assert cut.ranges == [None, "bytes=50-"]


def test_download_that_keeps_dropping_fails_and_leaves_nothing(served: InProcess, tmp_path: Path) -> None:
    cut = CutDownloads(served.transport, after=30, cuts=100)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DownloadFailed, match="after 3 tries at 90 bytes"):
        export_through(cut, served.token, out / "out.csv", resumes=2)
    assert list(out.iterdir()) == []  # no partial file under the final name, no .part left over
    assert len(cut.ranges) == 3


def test_resume_sends_if_range_so_a_changed_file_is_fetched_whole(served: InProcess, tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    class Recording(CutDownloads):
        def handle_request(self, request):  # type: ignore[no-untyped-def]
            if request.url.path == "/download":
                seen.append(dict(request.headers))
            return super().handle_request(request)

    export_through(Recording(served.transport, after=50), served.token, tmp_path / "out.csv")
    first, resumed = seen
    assert "range" not in first and first["accept-encoding"] == "identity"
    assert resumed["range"] == "bytes=50-" and resumed["if-range"].startswith('"')


def test_download_over_a_real_socket_dropped_by_a_proxy(tmp_path: Path) -> None:
    """`segport serve` as a real process; the client talks to it through a proxy that drops the download
    connection after 64 bytes of body. The resumed file equals a direct download and the independent writer."""
    settings = Settings(data_dir=tmp_path / "data")
    app = build(settings)
    try:
        seeded = seed_project(app, tmp_path)
    finally:
        app.close()  # the server process owns the DuckDB file from here on
    server = start_server(settings.data_dir, tmp_path / "server.log")
    try:
        port = int(server.base_url.rsplit(":", 1)[1])
        with DroppingProxy(port, after=64) as proxy, Client(proxy.url, seeded.token, backoff=FAST) as client:
            (path,) = client.export_segment(
                PROJECT, SEGMENT, KEYS, file_format="json", dest=tmp_path / "cut.json", timeout=30
            )
            assert proxy.dropped == 1
        with Client(server.base_url, seeded.token, backoff=FAST) as direct:
            (whole,) = direct.export_segment(
                PROJECT, SEGMENT, KEYS, file_format="json", dest=tmp_path / "whole.json", timeout=30
            )
    finally:
        stop_server(server)
    assert path.read_bytes() == whole.read_bytes()
    assert parse_jsonl(path.read_bytes()) == expected_jsonl(KEYS)
