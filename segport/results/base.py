"""The result store Protocol: where finished export files live until they expire."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class ResultStore(Protocol):
    def staging(self, job_id: str, attempt: int) -> Path:
        """A new, empty folder the engine writes an attempt's files into. Never served."""

    def publish(self, staging: Path, job_name: str) -> None:
        """Make a complete set of files visible under ``job_name`` atomically (all files or none)."""

    def discard(self, staging: Path) -> None:
        """Remove a failed or abandoned attempt's files."""

    def path(self, job_name: str, file_name: str) -> Path | None:
        """Local path of a published file, or ``None`` if it is not there."""

    def delete(self, job_name: str) -> None:
        """Delete a job's published files (expiry)."""

    def sweep_staging(self, in_use: Callable[[], set[str]]) -> int:
        """Remove staging folders (``<job id>-<attempt>``) left by crashed or abandoned attempts.

        The folders are listed first and ``in_use()`` asked after, so an attempt that starts in between is
        never swept. Returns how many were removed."""

    def sweep_published(self, kept: Callable[[list[str]], set[str]]) -> int:
        """Remove published job folders whose names ``kept(names)`` does not return (orphans)."""
