"""The wake-up call from a submit to a process's idle export workers (segport/wake.py).

Several workers share one wake. With a plain event each cleared it after waiting, and one worker's clear could
wipe a wake that came for another, which then slept through a queued job until its next poll (2 s). Here no
wake is ever lost: not one that comes while a worker looks for a job, nor one meant for several workers."""

from __future__ import annotations

import threading
import time

from segport.wake import Wake


def test_a_wake_while_the_worker_looked_for_a_job_is_not_slept_through() -> None:
    wake = Wake()
    seen = wake.count  # before looking for a job
    wake.set()  # a submit, while the worker looks (and finds nothing yet)
    started = time.monotonic()
    assert wake.wait_past(seen, timeout=30) is True
    assert time.monotonic() - started < 5


def test_one_wake_reaches_every_waiting_worker() -> None:
    wake = Wake()
    seen = wake.count
    woken: list[bool] = []
    waiters = [threading.Thread(target=lambda: woken.append(wake.wait_past(seen, timeout=30))) for _ in range(3)]
    for t in waiters:
        t.start()
    time.sleep(0.05)
    wake.set()
    for t in waiters:
        t.join(10)
    assert woken == [True, True, True]


def test_a_wake_one_worker_has_seen_is_still_there_for_the_next() -> None:
    """The lost wake of a shared, cleared event: worker A returns from its wait and (before) would clear it;
    worker B, which looked for a job at the same moment, must still find the wake when it waits."""
    wake = Wake()
    seen_by_a = seen_by_b = wake.count
    wake.set()
    assert wake.wait_past(seen_by_a, timeout=0.1) is True  # A wakes, takes a job
    assert wake.wait_past(seen_by_b, timeout=0.1) is True  # B is not put to sleep for a poll interval


def test_without_a_wake_a_worker_waits_its_poll_interval() -> None:
    wake = Wake()
    started = time.monotonic()
    assert wake.wait_past(wake.count, timeout=0.2) is False
    assert time.monotonic() - started >= 0.2
