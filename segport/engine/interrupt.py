"""A handle to stop a running export from another thread (cancel, lost lease).

The service creates one per running job and passes it to :meth:`ProfileEngine.export`; the engine binds the
function that aborts its statement (DuckDB: ``cursor.interrupt()``). Firing before the engine bound anything
still counts: the bind then aborts at once. An abort that fails (the statement ended, its connection closed
a moment before) is logged and dropped: firing never fails the caller, a cancel request or a lease check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("segport.exports")


class Interrupt:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abort: Callable[[], object] | None = None
        self._fired = False
        self.reason = ""

    @property
    def fired(self) -> bool:
        return self._fired

    def bind(self, abort: Callable[[], object]) -> None:
        """Called by the engine with the function that stops its running statement."""
        with self._lock:
            self._abort = abort
            fired = self._fired
        if fired:
            _abort(abort, self.reason)

    def unbind(self) -> None:
        with self._lock:
            self._abort = None

    def fire(self, reason: str) -> None:
        """Stop the export (idempotent). ``reason`` is kept for the log."""
        with self._lock:
            if self._fired:
                return
            self._fired = True
            self.reason = reason
            abort = self._abort
        if abort is not None:
            _abort(abort, reason)


def _abort(abort: Callable[[], object], reason: str) -> None:
    try:
        abort()
    except Exception as exc:  # the engine's own error type: the statement has already ended
        log.info("stopping the export (%s) found nothing to stop: %s", reason, exc)
