"""What runs in the background of a process that owns the engine, for as long as it serves: the export workers
(with their janitor) and the daily recompute."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from segport.app import EngineApp
from segport.loader import EventLoader
from segport.scheduler import DailyRecompute
from segport.services.events import EventService
from segport.store.events import EventSpool
from segport.worker import Worker


@contextmanager
def background_work(app: EngineApp, *, workers: bool, daily: bool, events: bool = False) -> Iterator[None]:
    """Start the workers (if ``workers``), the daily recompute (if ``daily``) and the event loader (if
    ``events``: the engine process's; the one-process form leaves the spool to whoever calls the loader);
    stop them when the block ends."""
    worker = Worker(app) if workers else None
    recompute = DailyRecompute(app.data, app.settings.recompute_interval_s) if daily else None
    loader = EventLoader(
        EventService(app.meta, app.engine, app.data),
        EventSpool(app.meta),
        app.settings.data_dir / "tmp" / "events",
        app.settings.event_load_interval_s if events else 0.0,
    )
    if worker is not None:
        worker.start()
    if recompute is not None:
        recompute.start()
    loader.start()
    try:
        yield
    finally:
        loader.stop()
        if recompute is not None:
            recompute.stop()
        if worker is not None:
            worker.stop()
