"""Workers: claim jobs from the queue, run them under a lease with a heartbeat, publish atomically.

Workers run as threads inside ``segport serve`` or in ``segport worker`` processes. A submit wakes them at
once (an in-process event); otherwise they look for work every ``poll_interval_s``, which is also how jobs
whose worker died come back: their lease lapses and the next claim takes them (up to ``max_attempts`` runs).

While a job runs, a heartbeat thread renews its lease every ``heartbeat_s``. If the lease is gone (the job was
cancelled, or it lapsed and another worker took it) the heartbeat interrupts the running export at once.

The janitor runs at start and every ``cleanup_interval_s``: it expires results past their TTL and removes
files no job owns (staging folders and published folders left by a crash).

While the metadata store is unreachable (:class:`MetadataUnavailable`, logged once per outage by the store)
every loop keeps going quietly and picks up again when it is back: an export whose job row could not be
written is dropped, and its lease brings the job back. A result store (S3) the janitor cannot reach is one
line when it goes and one when it is back; each round tries again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from segport.app import EngineApp
from segport.engine.interrupt import Interrupt
from segport.errors import MetadataUnavailable, ResultStoreUnavailable
from segport.store.queue import LeaseLost

log = logging.getLogger("segport.worker")


class Worker:
    def __init__(self, app: EngineApp, threads: int | None = None) -> None:
        self.app = app
        self.threads = threads or app.settings.max_running_jobs
        self.node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._pool: list[threading.Thread] = []

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, args=(f"{self.node}/{i}",), name=f"segport-worker-{i}", daemon=True)
            t.start()
            self._pool.append(t)
        janitor = threading.Thread(target=self._janitor, name="segport-janitor", daemon=True)
        janitor.start()
        self._pool.append(janitor)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.app.wake.set()
        for t in self._pool:
            t.join(timeout)

    def run_until_empty(self) -> int:
        """Run queued jobs in the calling thread until none is left (tests, `segport worker --once`)."""
        done = 0
        while self.run_one(f"{self.node}/inline"):
            done += 1
        return done

    # --- work --------------------------------------------------------------------------------------
    def run_one(self, owner: str) -> bool:
        settings = self.app.settings
        row = self.app.queue.claim(
            owner,
            settings.lease_s,
            max_running_per_project=settings.max_running_jobs_per_project,
            error_ttl_s=settings.result_ttl_s,
        )
        if row is None:
            return False
        interrupt = Interrupt()
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(row.id, owner, beat_stop, interrupt), daemon=True)
        beat.start()
        try:
            self.app.runner.run(row, owner, interrupt)
        except LeaseLost:
            log.warning("job %s: no longer ours (%s), attempt dropped", row.id, interrupt.reason or "lease lost")
        except MetadataUnavailable:
            log.warning(
                "job %s: metadata store unavailable, attempt dropped; it runs again when its lease lapses", row.id
            )
        finally:
            beat_stop.set()
            beat.join()
        return True

    def _loop(self, owner: str) -> None:
        poll = self.app.settings.poll_interval_s
        wake = self.app.wake
        while not self._stop.is_set():
            seen = wake.count  # the wakes so far, before looking for a job
            try:
                if self.run_one(owner):
                    continue
            except MetadataUnavailable:
                pass  # the store logged the outage; look again at the next poll
            except Exception:  # keep the worker alive; the job's lease brings it back
                log.exception("worker %s: unexpected error", owner)
            wake.wait_past(seen, poll)  # returns at once if a submit came while we looked

    def _heartbeat(self, job_id: str, owner: str, stop: threading.Event, interrupt: Interrupt) -> None:
        settings = self.app.settings
        while not stop.wait(settings.heartbeat_s):
            try:
                self.app.queue.heartbeat(job_id, owner, settings.lease_s)
            except LeaseLost:
                interrupt.fire("lease lost or job cancelled")
                return
            except MetadataUnavailable:
                continue  # the lease lasts lease_s: the next beat renews it if the store is back by then
            except Exception:
                log.exception("job %s: heartbeat failed", job_id)

    def _janitor(self) -> None:
        interval = self.app.settings.cleanup_interval_s
        results_down = False  # the result store failed the last round: its outage is logged once, not per round
        while True:
            try:
                done = self.app.exports.cleanup()
                if results_down:
                    log.warning("cleanup: the result store is reachable again")
                    results_down = False
                if any(done.values()):
                    log.info("cleanup: %s", done)
            except MetadataUnavailable:
                pass  # the store logged the outage; the next round cleans up
            except ResultStoreUnavailable as exc:
                if not results_down:
                    log.warning("cleanup postponed until the result store is back: %s", exc.message)
                results_down = True
            except Exception:
                log.exception("cleanup failed")
            if self._stop.wait(interval):
                return
