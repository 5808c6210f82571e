"""The result store Protocol: where finished export files live until they expire.

An export attempt goes through an :class:`Attempt`: the engine writes plain local paths inside
``Attempt.folder`` (the store may make them FIFOs that stream elsewhere while the engine writes), then the
attempt is finished (every byte stored), published (all files visible at once) or discarded.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


class Attempt(Protocol):
    """One attempt's files on their way into the store. Never served before :meth:`publish`."""

    folder: Path

    def prepare(self, names: list[str]) -> None:
        """The engine is about to write ``folder / name`` for each name (called before it opens any)."""

    def finish(self) -> dict[str, int]:
        """After the engine returned: wait until every byte is stored; the size of each file by name.

        Raises the store's error (e.g. :class:`~segport.errors.ResultStoreUnavailable`) if storing failed."""

    def failure(self) -> BaseException | None:
        """Why storing failed, if it did: a better explanation than the engine's broken pipe."""

    def publish(self) -> None:
        """Make the files complete and visible to :meth:`ResultStore.locate` for this attempt."""

    def discard(self) -> None:
        """Remove the attempt's files, published or not (failed, cancelled, lease lost)."""


@dataclass(frozen=True, slots=True)
class RemoteResult:
    """A published file held outside this process's disk (object storage)."""

    size: int
    modified: datetime
    read: Callable[[int, int], Iterator[bytes]]  # (start, end exclusive) -> chunks; raises SegportError
    redirect_url: str | None = None  # set when downloads are answered with a redirect to the store


class ResultStore(Protocol):
    def check(self) -> None:
        """Raise a :class:`~segport.errors.SegportError` naming the problem if the store cannot be used."""

    def begin(self, job_id: str, attempt: int, job_name: str, *, prefix: bytes = b"") -> Attempt:
        """Start storing attempt ``attempt`` of a job; every file starts with ``prefix`` (e.g. a BOM)."""

    def locate(self, job_name: str, job_id: str, attempt: int, file_name: str) -> Path | RemoteResult | None:
        """A published file of the attempt that finished the job, or ``None`` if it is not there."""

    def staging(self, job_id: str, attempt: int) -> Path:
        """A new, empty folder the engine writes an attempt's files into. Never served."""

    def path(self, job_name: str, file_name: str) -> Path | None:
        """Local path of a published file, or ``None`` if it is not there."""

    def delete(self, job_name: str) -> None:
        """Delete a job's published files (expiry)."""

    def sweep_staging(self, in_use: Callable[[], set[str]]) -> int:
        """Remove staging folders (``<job id>-<attempt>``) left by crashed or abandoned attempts.

        The folders are listed first and ``in_use()`` asked after, so an attempt that starts in between is
        never swept. Returns how many were removed."""

    def sweep_published(self, kept: Callable[[list[str]], dict[str, str]]) -> int:
        """Remove published files whose job ``kept(names)`` does not return (orphans). ``kept`` maps a job
        name to the ``<job id>-<attempt>`` that may own files; a store that keys files by attempt also
        removes those of other attempts."""


def new_staging(root: Path, job_id: str, attempt: int) -> Path:
    """``root/<job id>-<attempt>``, emptied if a previous run of this attempt left it behind."""
    path = root / f"{job_id}-{attempt}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def media_type_of(file_name: str) -> str:
    """The Content-Type a result file is served with."""
    if file_name.endswith(".gz"):
        return "application/gzip"
    if file_name.endswith(".csv"):
        return "text/csv; charset=utf-8"
    return "application/x-ndjson; charset=utf-8"
