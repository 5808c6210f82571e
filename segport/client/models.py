"""Typed results of the client: jobs, job results, progress events, and the backoff policy."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# The seed's stages; GrowingIO's own SDK also knows READY and DATA_READY, which the client treats as "not yet".
NONE = "NONE"
RUNNING = "RUNNING"
FINISH = "FINISH"
ERROR = "ERROR"

Phase = Literal["submitted", "waiting", "downloading", "done"]


@dataclass(frozen=True, slots=True)
class Job:
    """A submitted export job: the server's ``{"id", "name"}``."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class JobError:
    code: str | None
    message: str


@dataclass(frozen=True, slots=True)
class JobResult:
    """``GET /v1/api/job/result/{id}``: the seed's ``stage`` and ``uris``, plus segport's extras when sent.

    Only ``stage`` and ``uris`` are required; everything else is ``None`` on a server that does not send it.
    (:func:`segport.client.wire.job_result` reads one from the server's answer.)
    """

    stage: str
    uris: tuple[str, ...]
    id: str | None = None
    name: str | None = None
    rows: int | None = None
    bytes: int | None = None
    attempts: int | None = None
    error: JobError | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        return self.stage == ERROR

    @property
    def finished(self) -> bool:
        """Done and downloadable. GrowingIO's SDK polls until ``uris`` is non-empty, so that is the test."""
        return bool(self.uris) and not self.failed


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress event of an export: handed to the ``progress`` callback as things change."""

    phase: Phase
    elapsed_s: float
    job: Job | None = None
    stage: str | None = None
    rows: int | None = None  # when the server says (segport does once FINISH)
    file: str | None = None  # the file being downloaded
    downloaded: int = 0  # bytes of that file on disk so far
    total: int | None = None  # its size, when the server says


ProgressFn = Callable[[Progress], None]


def emit(progress: ProgressFn | None, event: Progress) -> None:
    if progress is not None:
        progress(event)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt ``n`` waits about ``initial_s * factor**n``, at most ``max_s``.

    The wait is drawn uniformly from ``[(1 - jitter) * d, d]`` so that many clients do not poll in step.
    """

    initial_s: float = 0.25
    factor: float = 2.0
    max_s: float = 5.0
    jitter: float = 0.5

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        base = min(self.max_s, self.initial_s * self.factor ** max(0, attempt))
        d = base * (1.0 - self.jitter * random.random())
        # the server's Retry-After is a floor: never ask again sooner than it said
        return max(d, retry_after) if retry_after is not None else d
