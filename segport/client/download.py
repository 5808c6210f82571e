"""Resumable downloads: the partial file and its bookkeeping, and where a job's files go on disk.

A download is written to a hidden ``.<name>.part`` file next to its target and renamed into place only when
complete, so a target path never holds a partial file.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO
from urllib.parse import unquote

import httpx

from segport.client.errors import DownloadFailed
from segport.client.models import Job, Progress, ProgressFn, emit

_UNSAFE_NAME = re.compile(r'[\x00-\x1f/\\:*?"<>|]')
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


class PartFile:
    """The partial download: where it is, how far it got, and what the server said about it."""

    def __init__(self, path: Path, name: str, progress: ProgressFn | None, started: float, job: Job | None) -> None:
        self.path = path
        self.name = name
        self.progress = progress
        self.started = started
        self.job = job
        self.file: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed by commit/discard
        self.offset = 0
        self.total: int | None = None
        self.validator: str | None = None

    def range_headers(self) -> dict[str, str]:
        # identity encoding: Range counts bytes of the encoded body, so there must be no encoding
        headers = {"Accept-Encoding": "identity"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        return headers

    def begin(self, response: httpx.Response) -> None:
        if response.status_code == 206:
            start, _end, total = content_range(response.headers.get("content-range"))
            if start != self.offset:
                raise DownloadFailed(f"asked for bytes from {self.offset}, the server sent from {start}")
            self.total = total if total is not None else self.total
        else:  # the whole file: first try, or the server ignored Range / the file changed (If-Range)
            self.restart()
            length = response.headers.get("content-length", "")
            self.total = int(length) if length.isdigit() else None
            etag = response.headers.get("etag")
            self.validator = etag if etag and not etag.startswith("W/") else response.headers.get("last-modified")
        self._report()

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.offset += len(chunk)
        self._report()

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.offset = 0

    def commit(self, target: Path) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.path, target)

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)

    def _report(self) -> None:
        emit(
            self.progress,
            Progress(
                "downloading",
                time.monotonic() - self.started,
                self.job,
                file=self.name,
                downloaded=self.offset,
                total=self.total,
            ),
        )


def file_name_of(uri: str) -> str:
    """The file name a uri ends in (``.../51活动用户_2026-11-28_UserList.csv``), safe to create locally."""
    name = unquote(uri).rstrip("/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip()
    return name if name not in ("", ".", "..") else "UserList"


def target_path(uri: str, dest: str | os.PathLike[str]) -> Path:
    """``dest`` itself, or the uri's file name inside ``dest`` when that is an existing directory."""
    path = Path(dest)
    return path / file_name_of(uri) if path.is_dir() else path


def target_paths(uris: Sequence[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Where each of a job's files goes: into a directory under the server's names, or to ``dest`` (one
    file) or ``<stem>-1<suffix>``, ``<stem>-2<suffix>``, ... (a job split into several files)."""
    path = Path(dest)
    if path.is_dir() or len(uris) <= 1:
        return [target_path(uri, path) for uri in uris]
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return [path.with_name(f"{stem}-{i}{suffix}") for i in range(1, len(uris) + 1)]


def content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``Content-Range: bytes 10-99/100`` -> (10, 99, 100); ``bytes */100`` -> (None, None, 100)."""
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if m is None:
        return None, None, None
    start, end, total = m.groups()
    return (int(start) if start else None, int(end) if end else None, int(total) if total != "*" else None)
