"""Result files in a local folder: ``<data dir>/results/<job name>/<file>``.

Files are written under ``results/.staging/<job id>-<attempt>/`` and published with one ``rename`` of the
folder, so a reader sees all of a job's files or none, never a partial one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from segport.domain.naming import JOB_NAME_RE
from segport.results.base import Attempt, new_staging


class LocalResultStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging_root = root / ".staging"
        self.staging_root.mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        """Nothing to check: the folder was created above."""

    def begin(self, job_id: str, attempt: int, job_name: str, *, prefix: bytes = b"") -> Attempt:
        return LocalAttempt(self, job_id, attempt, job_name, prefix)

    def locate(self, job_name: str, job_id: str, attempt: int, file_name: str) -> Path | None:
        return self.path(job_name, file_name)  # one folder per job: the attempt that published it

    def staging(self, job_id: str, attempt: int) -> Path:
        return new_staging(self.staging_root, job_id, attempt)

    def publish(self, staging: Path, job_name: str) -> None:
        final = self._job_dir(job_name)
        if final.exists():  # a previous attempt published, then lost its lease before FINISH
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_dir(self.root)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def path(self, job_name: str, file_name: str) -> Path | None:
        folder = self._job_dir(job_name)
        candidate = folder / file_name
        # the file name comes from the job row, but check containment anyway
        if candidate.parent != folder or not candidate.is_file():
            return None
        return candidate

    def delete(self, job_name: str) -> None:
        shutil.rmtree(self._job_dir(job_name), ignore_errors=True)

    def sweep_staging(self, in_use: Callable[[], set[str]]) -> int:
        entries = list(self.staging_root.iterdir())  # before asking: see the Protocol
        keep = in_use()
        removed = 0
        for entry in entries:
            if entry.name not in keep:
                _remove(entry)
                removed += 1
        return removed

    def sweep_published(self, kept: Callable[[list[str]], dict[str, str]]) -> int:
        names = [e.name for e in self.root.iterdir() if e.is_dir() and JOB_NAME_RE.match(e.name)]
        keep = kept(names) if names else set()
        removed = 0
        for name in names:
            if name not in keep:
                shutil.rmtree(self.root / name, ignore_errors=True)
                removed += 1
        return removed

    def _job_dir(self, job_name: str) -> Path:
        if not JOB_NAME_RE.match(job_name):
            raise ValueError(f"not a job name: {job_name!r}")
        return self.root / job_name


class LocalAttempt:
    """An export attempt written into a staging folder, published by the store's one ``rename``."""

    def __init__(self, store: LocalResultStore, job_id: str, attempt: int, job_name: str, prefix: bytes) -> None:
        self.store = store
        self.job_name = job_name
        self.prefix = prefix
        self.folder = store.staging(job_id, attempt)
        self.names: list[str] = []
        self.published = False

    def prepare(self, names: list[str]) -> None:
        self.names = list(names)

    def finish(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for name in self.names:
            path = self.folder / name
            if self.prefix:
                _prepend(path, self.prefix)
            sizes[name] = path.stat().st_size
        return sizes

    def failure(self) -> BaseException | None:
        return None  # a local write fails in the engine itself, with its own error

    def publish(self) -> None:
        self.store.publish(self.folder, self.job_name)
        self.published = True

    def discard(self) -> None:
        if self.published:  # published, then the lease was lost before FINISH
            self.store.delete(self.job_name)
        else:
            self.store.discard(self.folder)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prepend(path: Path, prefix: bytes) -> None:
    """Put ``prefix`` before the file's bytes (a rewrite: local files are not streamed anywhere)."""
    tmp = path.with_name(path.name + ".prefix")
    with open(tmp, "wb") as out, open(path, "rb") as src:
        out.write(prefix)
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, path)
