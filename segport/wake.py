"""The wake-up call from a submit to the idle export workers of the same process."""

from __future__ import annotations

import threading


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
