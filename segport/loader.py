"""The event loader inside the engine process: it moves the spool's accepted batches into the event store.

API processes commit each accepted batch to the spool (the metadata store) before they answer 200, and never open
the engine. This thread, in the one process that owns the engine, loads the pending batches every
``event_load_interval_s`` (and at once when a round found a full page, so a backlog drains without waiting):
freshness is bounded by that interval plus the time one round takes (docs/events.md). Loaded batches stay in
the spool for its deduplication window, then are pruned here.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from segport.errors import MetadataUnavailable
from segport.services.events import EventService, LoadRound
from segport.store.events import DEDUP_WINDOW, EventSpool
from segport.store.models import utcnow

log = logging.getLogger("segport.loader")
PAGE = 200  # batches per round (a round of 200 batches of 100 events costs about a quarter less CPU per event than two of 100)
PRUNE_EVERY_S = 600.0


class EventLoader:
    def __init__(self, events: EventService, spool: EventSpool, scratch: Path, interval_s: float) -> None:
        self.events = events
        self.spool = spool
        self.scratch = scratch
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned = 0.0

    def start(self) -> None:
        if self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="segport-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def run_once(self) -> LoadRound:
        """Load what is pending now (one page); prune loaded batches past the deduplication window."""
        done = self.events.load_pending(self.spool, self.scratch, PAGE)
        if time.monotonic() - self._pruned > PRUNE_EVERY_S:
            self._pruned = time.monotonic()
            self.spool.prune(utcnow() - DEDUP_WINDOW)
        return done

    def _run(self) -> None:
        wait = self.interval_s
        while not self._stop.wait(wait):
            try:
                done = self.run_once()
                if done.batches:
                    log.info("loaded %d spool batches (%d events)", done.batches, done.events)
                wait = 0.0 if done.batches >= PAGE else self.interval_s
            except MetadataUnavailable:  # the store logs its outage once; the batches wait in the spool
                wait = self.interval_s
            except Exception:  # keep the thread alive: the next round retries (nothing was marked loaded)
                log.exception("loading the event spool failed")
                wait = self.interval_s
