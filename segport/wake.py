"""How a submit or a cancel reaches the export workers: a wake-up call to the idle workers of this process, and the
link (local, or to another process) that an :class:`segport.services.exports.ExportService` is built with."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class Wake:
    """What a submit sets to wake this process's idle export workers.

    Several workers wait on it, so none may clear it: one worker clearing a shared event could wipe a wake
    that came for another, which would then sleep through a queued job until its next poll. Instead a wake is
    counted, and a worker waits for the count to move past the one it saw before it last looked for a job (so
    a wake that comes while it looks is never missed either)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.count = 0

    def set(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_past(self, seen: int, timeout: float) -> bool:
        """Wait until a wake after ``seen`` (at most ``timeout`` s); True if there was one."""
        with self._changed:
            return self._changed.wait_for(lambda: self.count != seen, timeout)


class WorkerLink(Protocol):
    """How a submit and a cancel reach the export workers, wherever they run. Each process's role picks its
    link when it builds the :class:`segport.services.exports.ExportService`."""

    def wake(self) -> None:
        """A job was queued: wake an idle worker now, not at its next poll."""

    def interrupt(self, job_id: str, reason: str) -> None:
        """Stop ``job_id`` now if a worker is running it; a worker the link does not reach sees its lease gone at
        its next heartbeat."""


class LocalWorkers:
    """The link to the workers of this process: ``wake`` sets their :class:`Wake`, ``interrupt`` fires the
    running job's interrupt through ``stop`` (:meth:`segport.services.runner.ExportRunner.stop_running`)."""

    def __init__(self, wake: Wake, stop: Callable[[str, str], object]) -> None:
        self._wake = wake
        self._stop = stop

    def wake(self) -> None:
        self._wake.set()

    def interrupt(self, job_id: str, reason: str) -> None:
        self._stop(job_id, reason)


class UnlinkedWorkers:
    """The link of a process that knows no way to its workers (`segport api` on a shared engine without
    ``engine_url``): they find a queued job at their next poll, and a cancelled one at their next heartbeat."""

    def wake(self) -> None:
        """Nothing to send: the workers poll."""

    def interrupt(self, job_id: str, reason: str) -> None:
        """Nothing to send: the job's heartbeat stops it."""
