"""No file descriptor outlives a failed or cancelled export: many of them, run by the real worker, each
failing at another point of the chunked (FIFO) write, then `/proc/self/fd` compared with before.

The failures are the operating system's (disk full, a refused `open`, no FIFO, no thread): they are injected
by replacing the `os` / `threading` function segport calls, the one thing a test cannot provoke for real
in-process.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from segport.app import App
from segport.domain.jobs import Stage, TargetKind
from segport.engine.duckdb.fifo import fifo_into
from segport.errors import SegportError
from segport.services.exports import ExportRequest
from segport.worker import Worker
from tests.conftest import PROJECT

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir() or not hasattr(os, "mkfifo"), reason="Linux")

SEGMENT = "seg_51activity"
KEYS = ["id_$basic_userId", "id_$anonymous_user", "usr_name", "usr_city", "usr_total_spend", "tag_rfm", "tag_channel"]


def open_fds(data_dir: Path) -> tuple[int, list[str]]:
    """(how many descriptors are open, those on a named FIFO or a file under the result folder).

    The metadata store's files are not counted: its connection pool opens connections (each with its database,
    WAL and shared-memory files) as concurrent callers first need them, up to the pool's size, and keeps them;
    a test that polls while the worker runs can grow it by one at any moment, and that is no leak."""
    suspicious = []
    names = os.listdir("/proc/self/fd")
    counted = 0
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            is_fifo = stat.S_ISFIFO(os.stat(f"/proc/self/fd/{name}").st_mode)
        except OSError:  # the descriptor listdir itself used, gone by now
            continue
        if target.startswith(str((data_dir / "meta.sqlite").resolve())):
            continue
        counted += 1
        if (is_fifo and not target.startswith("pipe:")) or target.startswith(str(data_dir / "results")):
            suspicious.append(target)
    return counted, suspicious


def _raise(code: int) -> Callable[..., Any]:
    def fail(*_args: object, **_kwargs: object) -> Any:
        raise OSError(code, os.strerror(code))

    return fail


@contextmanager
def failing(monkeypatch: pytest.MonkeyPatch, mode: str) -> Iterator[None]:
    """Make the operating system fail in one way while the block runs."""
    real_open, real_splice, real_write, real_start = os.open, os.splice, os.write, threading.Thread.start
    calls = {"moves": 0}
    with monkeypatch.context() as m:
        if mode == "result file cannot be opened":

            def refuse_result(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
                if ".staging" in str(path) and str(path).endswith((".csv", ".json", ".gz")):
                    raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_open(path, flags, *args, **kwargs)

            m.setattr(os, "open", refuse_result)
        elif mode == "second writer cannot be opened":

            def refuse_writer(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
                if str(path).endswith(".fifo") and flags & os.O_WRONLY:
                    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(path))
                return real_open(path, flags, *args, **kwargs)

            m.setattr(os, "open", refuse_writer)
        elif mode == "no fifo":
            m.setattr(os, "mkfifo", _raise(errno.ENOSPC))
        elif mode == "no thread":

            def refuse_thread(self: threading.Thread) -> None:
                if self.name.startswith("segport-fifo"):
                    raise RuntimeError("can't start new thread")
                real_start(self)

            m.setattr(threading.Thread, "start", refuse_thread)
        elif mode.startswith("disk full"):  # the pump dies after its n-th move: mid-file or between chunks
            after = int(mode.rsplit(" ", 1)[1])

            def full(real: Callable[..., int]) -> Callable[..., int]:
                def move(*args: Any) -> int:
                    if threading.current_thread().name.startswith("segport-fifo"):
                        calls["moves"] += 1
                        if calls["moves"] > after:
                            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    return real(*args)

                return move

            m.setattr(os, "splice", full(real_splice))  # plain files: kernel-side moves
            m.setattr(os, "write", full(real_write))  # gzip: the pump writes what zlib made
        yield


MODES = [
    "result file cannot be opened",
    "second writer cannot be opened",
    "no fifo",
    "no thread",
    "disk full 0",
    "disk full 1",
    "disk full 3",
]


def _wait_all_done(app: App, ids: list[str], timeout_s: float = 120, what: str = "") -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {i: app.queue.get(i) for i in ids}
        if all(r.stage in (Stage.FINISH.value, Stage.ERROR.value) for r in rows.values()):
            return rows
        assert time.monotonic() < deadline, (what, {i: r.stage for i, r in rows.items()})
        time.sleep(0.02)


def _export_s(app: App, job_id: str) -> float:
    """How long the job took from its submit to FINISH, as its row records it."""
    (row,) = _wait_all_done(app, [job_id]).values()
    assert row.stage == Stage.FINISH.value and row.finished_at is not None, row.stage
    return (row.finished_at - row.created_at).total_seconds()


def test_failed_and_cancelled_exports_leave_no_descriptor_open(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segport.demo import build_demo

    token = build_demo(app, users=20_000)
    who = app.meta.authenticate(token)
    app.engine.chunk_rows = 700  # type: ignore[attr-defined]  # ~14 chunks a file: every path goes through the FIFO
    app.engine.one_scan = False  # type: ignore[attr-defined]  # the chunked writer, not one scan
    rng = random.Random(15)
    variant = iter(range(10_000))

    def submit(fmt: str = "csv") -> str:
        n = next(variant)  # a distinct request each time (identical ones are deduplicated)
        keys = KEYS[n % len(KEYS) :] + KEYS[: n % len(KEYS)]
        keys = keys[: 2 + n % (len(KEYS) - 1)]
        req = ExportRequest(keys, file_format=fmt, compression="gzip" if n % 3 == 0 else "none")
        return app.exports.submit(who, PROJECT, TargetKind.SEGMENT, SEGMENT, req).id

    worker = Worker(app, threads=1)
    worker.start()
    try:
        warm = [submit(), submit("json")]  # pools and DuckDB's own files opened once, before counting
        assert {r.stage for r in _wait_all_done(app, warm).values()} == {Stage.FINISH.value}
        before, suspicious = open_fds(app.settings.data_dir)
        assert suspicious == []

        for mode in MODES:
            with failing(monkeypatch, mode):
                ids = [submit(rng.choice(["csv", "json"])) for _ in range(3)]
                rows = _wait_all_done(app, ids, what=mode)
            for row in rows.values():
                assert row.stage == Stage.ERROR.value, (mode, row.stage)
                assert row.error_code in ("STORAGE_FULL", "EXPORT_FAILED", "TOO_MANY_OPEN_FILES"), (
                    mode,
                    row.error_code,
                )
            if mode == "second writer cannot be opened":  # EMFILE: transient, run again up to the last attempt
                assert all(r.error_code == "TOO_MANY_OPEN_FILES" for r in rows.values()), mode
                assert all(r.attempts == app.settings.max_attempts for r in rows.values()), mode
            if mode.startswith("disk full"):
                assert all(r.error_code == "STORAGE_FULL" for r in rows.values()), mode

        # cancels at random moments: queued, opening the FIFO, mid-chunk, between chunks. The moments are drawn
        # within the time a whole export takes here, measured first: a fixed span would on a faster machine be
        # mostly after the export finished, and the cancels this test is about would not happen
        span = min(_export_s(app, submit(rng.choice(["csv", "json"]))) for _ in range(3))
        cancelled = 0
        for _ in range(25):
            job = submit(rng.choice(["csv", "json"]))
            time.sleep(rng.random() * span)
            try:
                app.exports.cancel(who, job)
                cancelled += 1
            except SegportError:  # it finished first: fine, that is a moment too
                pass
            _wait_all_done(app, [job])
        assert cancelled >= 5

        ok = [submit(), submit("json")]  # the worker still exports after all that
        assert {r.stage for r in _wait_all_done(app, ok).values()} == {Stage.FINISH.value}
    finally:
        worker.stop()
    after, suspicious = open_fds(app.settings.data_dir)
    assert suspicious == []
    assert after <= before, f"{after - before} descriptors more than before the failures"
    staging = app.settings.data_dir / "results" / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_a_writer_that_never_closes_does_not_keep_the_pump_or_its_descriptors(tmp_path: Path) -> None:
    before, _ = open_fds(tmp_path)
    target = tmp_path / "results" / "out.csv"
    target.parent.mkdir()
    stuck = -1
    with pytest.raises(OSError, match="did not finish"), fifo_into(target, stall_s=0.5) as pump:
        stuck = os.open(pump.path, os.O_WRONLY)  # a writer that never closes its end
        os.write(stuck, b"a,b\n")
    try:
        deadline = time.monotonic() + 5
        while any(t.name.startswith("segport-fifo") for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the pump thread is still alive"
            time.sleep(0.02)
        _, suspicious = open_fds(tmp_path)
        assert len(suspicious) == 1  # only our own writer end: the pump closed the reader and the file
    finally:
        os.close(stuck)
    after, suspicious = open_fds(tmp_path)
    assert suspicious == [] and after == before
    assert target.read_bytes() == b"a,b\n" and not (tmp_path / "results" / ".out.csv.fifo").exists()
