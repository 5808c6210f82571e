"""The daily recompute inside `segport serve`: DAILY segments are recomputed once per interval.

Imports already recompute DAILY segments in their own transaction; this thread catches the days without an
import. It wakes every minute (or sooner for short intervals) and recomputes every DAILY segment whose last
computation is older than ``interval_s``.
"""

from __future__ import annotations

import logging
import threading

from segport.errors import MetadataUnavailable
from segport.services.data import DataService

log = logging.getLogger("segport.scheduler")


class DailyRecompute:
    def __init__(self, data: DataService, interval_s: float) -> None:
        self.data = data
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="segport-daily", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def run_once(self) -> list[tuple[str, str]]:
        """Recompute the DAILY segments that are due; returns (project, segment) pairs."""
        return self.data.recompute_daily(older_than_s=self.interval_s)

    def _run(self) -> None:
        tick = min(60.0, max(self.interval_s / 4, 0.05))
        while not self._stop.wait(tick):
            try:
                for project, key in self.run_once():
                    log.info("recomputed DAILY segment %s/%s", project, key)
            except MetadataUnavailable:
                pass  # the store logged the outage; the next tick retries
            except Exception:  # keep the thread alive: the next tick retries
                log.exception("daily recompute failed")
