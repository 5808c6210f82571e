"""AsyncClient against a real segport app in-process (httpx's ASGITransport; the workers run as threads)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from segport.client import AsyncClient, JobFailed, Progress, SegmentNotFound, Unauthorized
from segport.roles.inline import create_app
from segport.worker import Worker
from tests.client_support import BASE, FAST, AsyncCutDownloads
from tests.conftest import PROJECT, SEGMENT, Seeded
from tests.expected import expected_csv, expected_jsonl, parse_jsonl

KEYS = ["id_$basic_userId", "usr_gender", "tag_rfm", "usr_city"]


@pytest.fixture
def asgi(seeded: Seeded) -> Iterator[httpx.ASGITransport]:
    # ASGITransport does not run the app's lifespan, so the workers are started here
    worker = Worker(seeded.app, threads=1)
    worker.start()
    try:
        yield httpx.ASGITransport(app=create_app(seeded.app, run_workers=False))
    finally:
        worker.stop()


def client(transport: httpx.AsyncBaseTransport, token: str) -> AsyncClient:
    return AsyncClient(BASE, token, transport=transport, backoff=FAST)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_async_export_segment(asgi: httpx.ASGITransport, seeded: Seeded, tmp_path: Path, fmt: str) -> None:
    events: list[Progress] = []

    async def main() -> list[Path]:
        async with client(asgi, seeded.token) as c:
            return await c.export_segment(
                PROJECT, SEGMENT, KEYS, file_format=fmt, dest=tmp_path / f"o.{fmt}", timeout=30, progress=events.append
            )

    (path,) = asyncio.run(main())
    if fmt == "csv":
        assert path.read_bytes() == expected_csv(KEYS)
    else:
        assert parse_jsonl(path.read_bytes()) == expected_jsonl(KEYS)
    assert events[0].phase == "submitted" and events[-1].phase == "done"


def test_async_steps_and_concurrent_exports(asgi: httpx.ASGITransport, seeded: Seeded, tmp_path: Path) -> None:
    async def main() -> tuple[list[Path], list[Path]]:
        async with client(asgi, seeded.token) as c:
            job = await c.submit_segment_export(PROJECT, SEGMENT, ["usr_gender"])
            result = await c.wait(job, timeout=30)
            assert (await c.job_result(job.id)).uris == result.uris
            one = [await c.download(result.uris[0], tmp_path / "a.csv")]
            both = await asyncio.gather(
                c.export_segment(PROJECT, SEGMENT, ["usr_city"], dest=tmp_path / "b.csv", timeout=30),
                c.export_segment(PROJECT, SEGMENT, ["tag_rfm"], dest=tmp_path / "c.csv", timeout=30),
            )
            return one, [p for paths in both for p in paths]

    one, both = asyncio.run(main())
    assert one[0].read_bytes() == expected_csv(["usr_gender"])
    assert [p.read_bytes() for p in both] == [expected_csv(["usr_city"]), expected_csv(["tag_rfm"])]


def test_async_download_cut_mid_stream_resumes(asgi: httpx.ASGITransport, seeded: Seeded, tmp_path: Path) -> None:
    cut = AsyncCutDownloads(asgi, after=45, cuts=2)

    async def main() -> list[Path]:
        async with client(cut, seeded.token) as c:
            return await c.export_segment(PROJECT, SEGMENT, KEYS, dest=tmp_path / "cut.csv", timeout=30)

    (path,) = asyncio.run(main())
    assert path.read_bytes() == expected_csv(KEYS)
    assert cut.ranges == [None, "bytes=45-", "bytes=90-"]


def test_async_errors(asgi: httpx.ASGITransport, seeded: Seeded) -> None:
    async def main() -> None:
        async with client(asgi, seeded.token) as c:
            with pytest.raises(SegmentNotFound):
                await c.submit_segment_export(PROJECT, "seg_missing")
        async with client(asgi, "wrong") as c:
            with pytest.raises(Unauthorized):
                await c.job_result("abcd1234")

    asyncio.run(main())


def test_async_failed_job_raises_job_failed(seeded: Seeded) -> None:
    transport = httpx.ASGITransport(app=create_app(seeded.app, run_workers=False))

    async def main() -> None:
        async with client(transport, seeded.token) as c:
            job = await c.submit_segment_export(PROJECT, SEGMENT, ["usr_city"])
            seeded.app.data.remove_catalog_key(PROJECT, "usr_city")
            await asyncio.to_thread(Worker(seeded.app, threads=1).run_until_empty)
            with pytest.raises(JobFailed, match="no longer in the catalogue"):
                await c.wait(job, timeout=10)

    asyncio.run(main())
