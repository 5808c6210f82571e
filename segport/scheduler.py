"""The daily recompute inside `segport serve`: DAILY segments and DAILY computed tags are recomputed once per interval.

Imports already recompute DAILY segments in their own transaction; this thread catches the days without an
import. It wakes every minute (or sooner for short intervals) and recomputes every DAILY segment whose last
computation is older than ``interval_s``.
"""

from __future__ import annotations

import logging
import threading

from segport.errors import MetadataUnavailable
from segport.services.data import DataService
from segport.services.tags import TagService

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
        """Recompute the DAILY segments, then the DAILY computed tags, that are due; returns (project, key)
        pairs (segment keys, then ``tag_`` keys)."""
        segments = self.data.recompute_daily(older_than_s=self.interval_s)
        for project, key in segments:
            log.info("recomputed DAILY segment %s/%s", project, key)
        tags = TagService(self.data).recompute_daily(older_than_s=self.interval_s)
        for project, key in tags:
            log.info("recomputed DAILY tag %s/%s", project, key)
        return segments + tags

    def _run(self) -> None:
        tick = min(60.0, max(self.interval_s / 4, 0.05))
        while not self._stop.wait(tick):
            try:
                self.run_once()
            except MetadataUnavailable:
                pass  # the store logged the outage; the next tick retries
            except Exception:  # keep the thread alive: the next tick retries
                log.exception("daily recompute failed")
