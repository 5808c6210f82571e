"""The event loader inside the engine process: it moves the spool's accepted batches into the event store.

API processes commit each accepted batch to the spool (the metadata store) before they answer 200, and never open
the engine. This thread, in the one process that owns the engine, loads the pending batches every
``event_load_interval_s`` (and at once, with a larger page, when a round found a full page, so a backlog drains
without waiting): while the loader keeps up, freshness is bounded by that interval plus the time one round takes;
during a backlog it is the backlog's age (docs/events.md, "Freshness"). Loaded batches stay in
the spool for its deduplication window, then are pruned here.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segport.errors import MetadataUnavailable
from segport.services.events import EventService, LoadRound
from segport.store.events import DEDUP_WINDOW, EventSpool
from segport.store.models import utcnow

log = logging.getLogger("segport.loader")
PAGE = 200  # batches per round (a round of 200 batches of 100 events costs about a quarter less CPU per event than two of 100)
# Batches per round after a full round, i.e. while there is a backlog (batches arrive faster than rounds of PAGE load
# them): a round's fixed cost (~55 ms on DuckDB: the spool read, the engine's transaction, the catalogue) spread
# over three times the events, ~14% less CPU per event (docs/performance.md), so a backlog drains sooner; back to
# PAGE once a round finds fewer. A round of 600 batches of 100 events takes ~0.7 s on DuckDB and ~100 MB more of
# the engine process at its peak than one of 200: the freshness bound while a backlog lasts is docs/events.md's.
BACKLOG_PAGE = 600
PRUNE_EVERY_S = 600.0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector held off for a block (then on again, if it was). A round builds a tuple and two
    dicts for each of up to 60,000 events, none of them in a cycle, and keeps them to its end: each young
    collection meanwhile walked every one of them again, and the old generation's walked the whole heap, ~16% of
    the engine process's CPU while the loader drained a backlog (perf, docs/performance.md). Cycles other threads
    make meanwhile wait for the first collection after the block."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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

    def run_once(self, page: int = PAGE) -> LoadRound:
        """Load what is pending now (one page of ``page`` batches); prune loaded batches past the deduplication
        window."""
        with gc_paused():
            done = self.events.load_pending(self.spool, self.scratch, page)
        if time.monotonic() - self._pruned > PRUNE_EVERY_S:
            self._pruned = time.monotonic()
            self.spool.prune(utcnow() - DEDUP_WINDOW)
        return done

    def _run(self) -> None:
        wait, page = self.interval_s, PAGE
        while not self._stop.wait(wait):
            try:
                done = self.run_once(page)
                if done.batches:
                    log.info("loaded %d spool batches (%d events)", done.batches, done.events)
                full = done.batches >= page  # a backlog: the next round at once, and a larger one
                wait, page = (0.0, BACKLOG_PAGE) if full else (self.interval_s, PAGE)
            except MetadataUnavailable:  # the store logs its outage once; the batches wait in the spool
                wait, page = self.interval_s, PAGE
            except Exception:  # keep the thread alive: the next round retries (nothing was marked loaded)
                log.exception("loading the event spool failed")
                wait, page = self.interval_s, PAGE
