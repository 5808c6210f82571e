"""Dropping the tables that replaced snapshots no longer need, off the writer's path.

A publish (:func:`segport.engine.clickhouse.snapshots.publish`) only asks for a collection of its project; one
thread of the engine runs :func:`segport.engine.clickhouse.snapshots.collect` for it afterwards, so a
computation's reply does not wait for the listing of the snapshots and the ``DROP TABLE`` s.

Why this is safe without the writer lock: a collection drops only tables that some published snapshot row names
and that neither the newest row it read nor a row replaced less than ``keep_s`` ago names. A writer working
meanwhile builds tables under the *next* sequence number (named in no row yet) and publishes a row made from
the newest one, so every table it carries over is one the collection keeps.

Bounded and crash-safe: requests for a project while a collection runs are coalesced into one more run, and
every run looks at the project's whole history, so a collection that never ran (the process stopped first, or
it failed) is done by the next publish's. :meth:`Collector.close` lets a run in progress finish and skips the
rest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("segport.engine")


class Collector:
    """One daemon thread running ``run(project)`` for the projects asked for, one at a time, each once per
    request burst."""

    def __init__(self, run: Callable[[str], object]) -> None:
        self._run = run
        self._pending: dict[str, None] = {}  # an ordered set: projects asked for, not yet begun
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def request(self, project: str) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending[project] = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="segport-clickhouse-collect", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every collection asked for so far has run; ``False`` if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or not (self._pending or self._busy), timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Stop: the collection in progress (if any) finishes, the ones still waiting are left to the next
        publish's."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or bool(self._pending))
                if self._closed:
                    self._busy = False
                    self._cond.notify_all()
                    return
                project = next(iter(self._pending))
                del self._pending[project]
                self._busy = True
            try:
                self._run(project)
            except Exception as exc:  # a failed collection is redone by the next publish's
                log.warning("dropping replaced ClickHouse tables of project %s failed: %s", project, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
